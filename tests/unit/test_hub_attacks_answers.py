"""Issue 16, poisoned answers and hoarding: an answer its sample's aggregator cannot aggregate is refused when
posted and never stored; the deadline sweep closes samples one by one, setting aside (once) one that fails;
a person holds one task at a time across sessions, and a task left unanswered goes back to the queue."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import InvalidRequestError, TaskClosedError
from hgen.hub.kb.models import AnswerRow, Assignment, Reply, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, logged_in, web_hub
from hgen.protos import hub_pb2

DEVICE = "cam-1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> Iterator[HubService]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url},
                               "tasks": {"assignment_timeout_s": 60}})
    hub = HubService(config, KnowledgeBase.open(url, clock=clock), clock=clock)
    yield hub
    hub.close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path) as app:
        add_people(app, annotators=("ann", "bob"))
        yield app


def task_page(c: FlaskClient) -> tuple[str, str]:
    page = c.get("/annotate").get_data(as_text=True)
    return (re.search(r'data-task="([^"]+)"', page).group(1),
            re.search(r'name="csrf_token" value="([^"]+)"', page).group(1))


def boxes_answer(task, annotator: str) -> hub_pb2.Answer:  # type: ignore[no-untyped-def]
    answer = hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, annotator_id=annotator, operations=1)
    answer.boxes.boxes.add(x_min=1, y_min=1, x_max=5, y_max=5, class_id=1)
    return answer


def test_an_answer_of_the_wrong_kind_is_refused_when_posted_and_never_stored(web: HubApp) -> None:
    sample = make_sample(DEVICE)
    web.service.submit(make_request(DEVICE, [sample], m=1), "grpc")
    ann = logged_in(web, "ann")
    task_id, token = task_page(ann)
    posted = ann.post(f"/task/{task_id}/answer", data={"kind": "boxes", "csrf_token": token,
                                                       "shapes": '[{"x_min": 1, "y_min": 1, "x_max": 5, "y_max": 5, '
                                                                 '"class_id": 1}]'})
    assert posted.status_code == 400  # before issue 16: 303 with m=3, or a 500 (AggregationError) with m=1
    assert web.service.kb.count(AnswerRow) == 0 and web.service.kb.count(Reply) == 0
    assert ann.post(f"/task/{task_id}/answer", data={"kind": "class", "class_id": "4", "csrf_token": token}
                    ).status_code == 303
    assert web.service.kb.replies_for([sample.sample_id])[0].aggregated.class_id == 4


def test_the_annotator_api_refuses_what_cannot_be_aggregated(service: HubService) -> None:
    service.submit(make_request(DEVICE, [make_sample(DEVICE)], m=2), "grpc")
    api = service.annotators
    api.register("a")
    task = api.next_task("a")
    with pytest.raises(InvalidRequestError, match="takes a class_id answer, got boxes"):
        api.submit_answer(boxes_answer(task, "a"))
    with pytest.raises(InvalidRequestError, match="class ids must be in 0..9"):
        api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="a", class_id=12, operations=1))
    assert service.kb.count(AnswerRow) == 0 and service.kb.count(Assignment, status="open") == 1


def test_a_device_cannot_ask_for_an_aggregator_its_samples_answers_do_not_fit(service: HubService) -> None:
    sample = make_sample(DEVICE)
    result = service.submit(make_request(DEVICE, [sample], m=1, aggregator="box_union"), "grpc")
    assert result.accepted == [] and result.immediate[0].reject_reason == hub_pb2.REJECT_REASON_INVALID_REQUEST


def test_the_sweep_sets_aside_a_poisoned_sample_once_and_closes_the_others(
        service: HubService, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    samples = [make_sample(DEVICE) for _ in range(3)]
    service.submit(make_request(DEVICE, samples, m=2, deadline_s=30, now=clock.now), "grpc")
    api = service.annotators
    api.register("a")
    task = api.next_task("a")
    with service.kb.session() as s:  # an answer stored before answers were checked (as on today's main)
        s.get(Assignment, task.task_id).status = "answered"
        s.add(AnswerRow(task_id=task.task_id, sample_id=task.sample_id, annotator_id="a", class_id=None,
                        payload=boxes_answer(task, "a").SerializeToString(), latency_s=1.0, operations=1,
                        simulated=False, submitted_at=clock.now))
        s.get(Sample, task.sample_id).answer_count = 1
    caplog.set_level(logging.ERROR)
    published: list[hub_pb2.SampleReply] = []
    service.add_reply_observer(published.extend)
    clock.now += 31
    assert service.sweep_once()
    assert {r.sample_id for r in published} == {s.sample_id for s in samples} - {task.sample_id}
    assert service.metrics.get("sweep_set_aside") == 1
    assert service.kb.count(Sample, status="set_aside") == 1
    assert not service.sweep_once()  # nothing left: no second failure, no second log line
    restarted = KnowledgeBase.open(service.config.knowledge_base.url, clock=clock)
    assert restarted.expire_due() == []  # a restart does not hit the stored answer again
    restarted.close()
    assert sum(task.sample_id in r.getMessage() for r in caplog.records) == 1


def test_one_person_with_five_sessions_holds_one_task(web: HubApp) -> None:
    web.service.submit(make_request(DEVICE, [make_sample(DEVICE) for _ in range(5)], m=1), "grpc")
    sessions = [logged_in(web, "ann") for _ in range(5)]
    held = {task_page(c)[0] for c in sessions}
    assert len(held) == 1  # before issue 16: five tasks
    assert web.service.kb.count(Assignment, annotator_id="ann", status="open") == 1
    assert task_page(logged_in(web, "bob"))[0] not in held  # the others are left for everyone else


def test_an_unanswered_task_times_out_back_to_the_queue(service: HubService, clock: Clock) -> None:
    sample = make_sample(DEVICE)
    service.submit(make_request(DEVICE, [sample], m=1, deadline_s=3600, now=clock.now), "grpc")
    api = service.annotators
    for name in ("hoarder", "b"):
        api.register(name)
    task = api.next_task("hoarder")
    assert api.next_task("b") is None  # the only slot is held
    clock.now += 61
    service.sweep_once()
    assert service.metrics.get("tasks_timed_out") == 1
    again = api.next_task("b")
    assert again is not None and again.sample_id == sample.sample_id
    with pytest.raises(TaskClosedError):  # the late answer is refused
        api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="hoarder", class_id=1, operations=1))
    assert api.submit_answer(hub_pb2.Answer(task_id=again.task_id, annotator_id="b", class_id=2, operations=1)
                             ).aggregated.class_id == 2
