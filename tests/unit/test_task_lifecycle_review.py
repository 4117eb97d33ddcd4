"""Task lifecycle faults found by the web review: a sample whose image file is gone blocked the queue for everyone;
a paused person could still answer the task they held (which stayed blocked meanwhile); a deadlock on PostgreSQL
surfaced as a 500; a NUL character in a login name or a task id reached PostgreSQL (500)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg.errors
import pytest
from flask.testing import FlaskClient
from sqlalchemy.exc import OperationalError

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import AnnotatorPausedError, SampleImageMissingError, UnknownTaskError
from hgen.hub.kb import closing
from hgen.hub.kb.models import AnswerRow, Sample, TaskEvent
from hgen.hub.kb.images import UNREADABLE_RETRY_S
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub
from hgen.protos import hub_pb2

DEVICE = "cam-1"


def submit(service: HubService, n: int = 1, m: int = 1) -> list[hub_pb2.Sample]:
    samples = [make_sample(DEVICE, confidence=0.4, top=3) for _ in range(n)]
    result = service.submit(make_request(DEVICE, samples, m=m), "grpc")
    assert result.accepted == [s.sample_id for s in samples]
    return samples


def task_page(c: FlaskClient) -> tuple[str, str | None, str]:
    response = c.get("/annotate")
    assert response.status_code == 200, response.status_code
    page = response.get_data(as_text=True)
    found = re.search(r'data-task="([^"]+)"', page)
    return page, (found.group(1) if found else None), csrf_token_of(page)


def image_file(root: Path, sample_id: str) -> Path:
    return next(root.rglob(f"{sample_id}.*"))


def kb_service(tmp_path: Path, clock: Clock, url: str | None = None, **kb_options: object) -> HubService:
    """A hub service without transports: every image a file under tmp_path/img (inline limit 0)."""
    url = url or f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url, "inline_image_max_bytes": 0,
                                                                       "image_dir": str(tmp_path / "img")}})
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", inline_max_bytes=0, clock=clock, **kb_options)
    return HubService(config, kb, clock=clock)


# --- 1. a sample whose stored image is gone ----------------------------------------------------------------------


@pytest.fixture
def file_hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, knowledge_base={"inline_image_max_bytes": 0}) as app:  # every image is a file
        add_people(app, annotators=("ann", "bob", "carol"), operators=())
        yield app


def test_a_sample_whose_image_is_gone_is_set_aside_and_the_next_one_handed_out(
        file_hub: HubApp, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every annotator got a 500 while the oldest sample's file was missing. It is set aside (not closed: the file
    may be on another hub's disk, or a full descriptor table may have refused it) and the next one handed out."""
    service = file_hub.service
    broken, *healthy = submit(service, n=3)
    image_file(tmp_path, broken.sample_id).unlink()
    given = []
    with caplog.at_level(logging.WARNING):
        for who in ("ann", "bob", "carol"):
            _, task_id, _ = task_page(logged_in(file_hub, who))
            given.append(service.kb.sample_of_task(task_id) if task_id else None)
    assert sorted(given[:2]) == sorted(s.sample_id for s in healthy) and given[2] is None  # in the same request
    assert service.kb.replies_for([broken.sample_id]) == []  # still open: its deadline decides
    assert service.kb.count(Sample, id=broken.sample_id, status="received") == 1
    assert service.metrics.get("sample_image_unreadable") >= 1
    assert sum(broken.sample_id in r.getMessage() for r in caplog.records) == 1  # logged once


def test_a_sample_whose_image_could_not_be_read_for_a_while_is_handed_out_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read refused for a moment (EMFILE when the process ran out of descriptors) closed the sample for good."""
    clock = Clock()
    service = kb_service(tmp_path, clock)
    try:
        [sample] = submit(service)
        service.annotators.register("ann")
        real_get = service.kb.images.get

        def refused(*args: object) -> bytes:
            raise SampleImageMissingError("image file cannot be read: Too many open files")

        monkeypatch.setattr(service.kb.images, "get", refused)
        assert service.annotators.next_task("ann") is None
        monkeypatch.setattr(service.kb.images, "get", real_get)
        assert service.annotators.next_task("ann") is None  # set aside for a while: not read again at once
        clock.now += UNREADABLE_RETRY_S + 1
        task = service.annotators.next_task("ann")
        assert task is not None and task.sample_id == sample.sample_id
        assert service.kb.count(Sample, id=sample.sample_id, status="assigned") == 1
    finally:
        service.close()


def test_an_image_lost_after_the_task_was_given_keeps_the_answer_and_frees_a_held_task(tmp_path: Path) -> None:
    """The image, the answer and the skip all answered 500 once the file of an open task was gone."""
    service = kb_service(tmp_path, Clock())
    try:
        first, second = submit(service, n=2)
        api = service.annotators
        api.register("ann")
        task = api.next_task("ann")
        image_file(tmp_path, task.sample_id).unlink()
        assert service.kb.open_task(task.task_id, "ann", with_image=False) is not None
        with pytest.raises(SampleImageMissingError):
            service.kb.open_task(task.task_id, "ann")
        api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="ann", class_id=4, operations=1))
        assert service.kb.count(AnswerRow, task_id=task.task_id) == 1  # the answer stands
        held = api.next_task("ann")
        assert held is not None and held.sample_id != task.sample_id
        image_file(tmp_path, held.sample_id).unlink()
        api.max_open = 1
        assert api.next_task("ann") is None  # at the cap, its held task unreadable: given back, not stuck with it
        assert service.kb.open_task_count("ann") == 0
    finally:
        service.close()


def test_on_the_page_a_lost_image_is_503_and_the_answer_is_stored(file_hub: HubApp, tmp_path: Path) -> None:
    service = file_hub.service
    submit(service)
    client = logged_in(file_hub, "ann")
    _, task_id, token = task_page(client)
    image_file(tmp_path, service.kb.sample_of_task(task_id)).unlink()
    assert client.get(f"/task/{task_id}/image").status_code == 503
    answered = client.post(f"/task/{task_id}/answer", data={"kind": "class", "class_id": "3", "csrf_token": token})
    assert answered.status_code == 303 and service.kb.count(AnswerRow, task_id=task_id) == 1


def test_a_gold_sample_whose_image_is_gone_gives_a_device_task_instead(tmp_path: Path) -> None:
    """A lost gold image made every page load a 500 once gold was due."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "gold": {"share": 0.5},
                               "knowledge_base": {"url": url, "inline_image_max_bytes": 0,
                                                  "image_dir": str(tmp_path / "img")}})
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", inline_max_bytes=0)
    service = HubService(config, kb)
    try:
        gold = service.gold.add(png_image(seed=3), 2, config.num_classes, config.limits)
        image_file(tmp_path, gold).unlink()
        [sample] = submit(service)
        service.annotators.register("ann")
        assert service.gold.assign("ann") is None  # set aside, no exception (it was a 500 on every page)
        task = service.annotators.next_task("ann")
        assert task is not None and task.sample_id == sample.sample_id  # gold due or not: the device's sample
    finally:
        service.close()


# --- 2. a paused annotator -----------------------------------------------------------------------------------------


def test_an_operator_pause_hands_the_held_task_on_and_refuses_the_paused_answer(tmp_path: Path) -> None:
    with web_hub(tmp_path) as app:
        add_people(app, annotators=("mallory", "bob"), operators=("op",))
        [sample] = submit(app.service, m=1)
        _, held, _ = task_page(logged_in(app, "mallory"))
        op = logged_in(app, "op")
        token = csrf_token_of(op.get("/operator").get_data(as_text=True))
        response = op.post("/operator/annotator", data={"annotator": "mallory", "action": "pause", "csrf_token": token})
        assert response.status_code == 303
        _, bobs, _ = task_page(logged_in(app, "bob"))
        assert bobs is not None and app.service.kb.sample_of_task(bobs) == sample.sample_id  # the slot went on
        mallory = logged_in(app, "mallory")
        _, shown, token = task_page(mallory)
        assert shown is None
        for form in ({"class_id": "9", "kind": "class"}, {"release": "skip"}):
            response = mallory.post(f"/task/{held}/answer", data={**form, "csrf_token": token})
            assert response.status_code in (403, 409), response.status_code
            assert "paused" in response.get_data(as_text=True)
        assert app.service.kb.count(AnswerRow, annotator_id="mallory") == 0
        assert app.service.kb.count(TaskEvent, annotator_id="mallory") == 0


def test_a_gold_pause_releases_open_tasks_unrated_and_the_api_refuses_the_paused(tmp_path: Path) -> None:
    service = kb_service(tmp_path, Clock())
    try:
        api, gold = service.annotators, service.gold
        api.register("mallory"), api.register("bob")
        gold_id = gold.add(png_image(seed=5), 3, 10, service.config.limits)
        [sample] = submit(service, m=1)
        task = service.kb.assign_next("mallory")  # not api.next_task: gold could fall first
        gold_task = gold.assign("mallory")
        assert task.sample_id == sample.sample_id and gold_task.sample_id == gold_id
        gold.pause("mallory", "gold accuracy 0% on 4 gold tasks is below 60%")
        with service.kb.session() as s:
            assert s.get(Sample, sample.sample_id).assigned_count == 0
            assert s.get(Sample, gold_id).assigned_count == 0
        assert gold.rating("mallory").declined == 0  # taken back by the pause: not a miss of theirs
        with pytest.raises(AnnotatorPausedError, match="paused"):
            api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="mallory", class_id=3, operations=1))
        with pytest.raises(AnnotatorPausedError, match="paused"):
            api.release(gold_task.task_id, "mallory", "skip")
        assert service.metrics.get("annotator_paused") == 2
        assert service.kb.count(AnswerRow) == 0 and service.kb.count(TaskEvent) == 0
        assert service.kb.assign_next("bob").sample_id == sample.sample_id
    finally:
        service.close()


# --- 3. a deadlock or serialization failure is retried, never a 500 -----------------------------------------------


def test_a_deadlock_while_storing_an_answer_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = kb_service(tmp_path, Clock())
    try:
        [sample] = submit(service, m=1)
        service.annotators.register("ann")
        task = service.annotators.next_task("ann")
        check, failures = closing.check_answer, [psycopg.errors.DeadlockDetected("deadlock detected")]

        def deadlock_once(*args: object) -> None:
            if failures:
                raise OperationalError("UPDATE samples ...", {}, failures.pop())
            check(*args)

        monkeypatch.setattr(closing, "check_answer", deadlock_once)
        reply = service.annotators.submit_answer(
            hub_pb2.Answer(task_id=task.task_id, annotator_id="ann", class_id=2, operations=1))
        assert reply is not None and reply.aggregated.class_id == 2 and not failures
        assert service.kb.count(AnswerRow, sample_id=sample.sample_id) == 1
    finally:
        service.close()


def test_an_answer_posted_again_from_a_second_tab_is_409_already_answered(tmp_path: Path) -> None:
    """The same refusal as the loser of two overlapping posts gets (tests/integration/test_task_races_postgres.py)."""
    with web_hub(tmp_path) as app:
        add_people(app, annotators=("ann",), operators=())
        submit(app.service, m=3)
        tabs = [logged_in(app, "ann"), logged_in(app, "ann")]
        pages = [task_page(tab) for tab in tabs]
        assert pages[0][1] == pages[1][1]  # one task, shown in both tabs
        posted = [tab.post(f"/task/{task_id}/answer", data={"class_id": "2", "kind": "class", "csrf_token": token})
                  for tab, (_, task_id, token) in zip(tabs, pages)]
        assert [r.status_code for r in posted] == [303, 409]
        assert "already answered" in posted[1].get_data(as_text=True)
        assert app.service.kb.count(AnswerRow) == 1


# --- 4. a NUL character in a login name or a task id ---------------------------------------------------------------


def test_a_nul_in_a_login_name_or_a_task_id_is_bad_input(kb_url: str, tmp_path: Path) -> None:
    with web_hub(tmp_path, knowledge_base={"url": kb_url, "image_dir": str(tmp_path / "img")}) as app:
        add_people(app, annotators=("ann",), operators=("op",))
        anonymous = app.web.app.test_client()
        token = csrf_token_of(anonymous.get("/login").get_data(as_text=True))
        response = anonymous.post("/login", data={"username": "op\x00", "password": "x" * 12, "csrf_token": token})
        assert response.status_code == 400, response.status_code
        ann = logged_in(app, "ann")
        assert ann.get("/task/%00/image").status_code == 400
        _, _, token = task_page(ann)
        assert ann.post("/task/%00/answer", data={"class_id": "1", "csrf_token": token}).status_code == 400
        assert ann.post("/task/a%00b/answer", data={"release": "skip", "csrf_token": token}).status_code == 400
        kb = app.service.kb  # the knowledge base itself refuses such a key as an unknown task, never a 500
        assert kb.open_task("a\x00b", "ann") is None
        with pytest.raises(UnknownTaskError):
            kb.release_task("a\x00b", "ann", "skip", 0.0)
        with pytest.raises(UnknownTaskError):
            kb.submit_answer(hub_pb2.Answer(task_id="a\x00b", annotator_id="ann", class_id=1))


def test_a_pause_landing_while_a_task_is_assigned_gives_that_task_to_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paused between next_task's check and the assignment, the person kept the new task, which nobody else could
    take until the assignment timeout."""
    service = kb_service(tmp_path, Clock())
    try:
        [sample] = submit(service)
        api = service.annotators
        api.register("ann"), api.register("bob")
        assign = service.kb.assign_next

        def paused_meanwhile(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            task = assign(*args, **kwargs)
            service.gold.pause("ann", "paused by an operator")
            return task

        monkeypatch.setattr(service.kb, "assign_next", paused_meanwhile)
        assert api.next_task("ann") is None and service.kb.open_task_count("ann") == 0
        monkeypatch.setattr(service.kb, "assign_next", assign)
        task = api.next_task("bob")
        assert task is not None and task.sample_id == sample.sample_id
    finally:
        service.close()
