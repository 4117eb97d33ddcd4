"""Replies count the annotators who declined ("can't tell" / skip) without aggregating them, and a sample that
everyone declined closes at its deadline as EXPIRED with those counts, so the device keeps its model's answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hgen.hub.annotators import AnnotatorAPI
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample
from hgen.protos import hub_pb2

DEVICE = "dev-1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(tmp_path: Path, clock: Clock) -> Iterator[HubService]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url}})
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    for name in ("a", "b", "c", "d"):
        service.annotators.register(name)
    yield service
    service.close()


def release(api: AnnotatorAPI, annotator: str, kind: str) -> str:
    task = api.next_task(annotator)
    assert task is not None, f"{annotator} got no task"
    api.release(task.task_id, annotator, kind, latency_s=4.0)
    return task.sample_id


def answer(api: AnnotatorAPI, annotator: str, label: int) -> hub_pb2.SampleReply | None:
    task = api.next_task(annotator)
    assert task is not None, f"{annotator} got no task"
    return api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=annotator, class_id=label,
                                            operations=2, latency_s=3.0))


def submit(hub: HubService, clock: Clock, m: int) -> hub_pb2.AnnotationRequest:
    request = make_request(DEVICE, [make_sample(DEVICE, top=1)], m=m, deadline_s=10, now=clock.now)
    assert hub.submit(request, "grpc").accepted == [request.samples[0].sample_id]
    return request


def test_answered_reply_counts_declines_but_aggregates_only_the_answers(hub: HubService, clock: Clock) -> None:
    api = hub.annotators
    submit(hub, clock, m=2)
    release(api, "a", "cant_tell")
    release(api, "b", "skip")
    assert answer(api, "c", 5) is None  # the declines used up none of the m answers
    reply = answer(api, "d", 5)
    assert reply is not None and reply.status == hub_pb2.REPLY_STATUS_ANSWERED
    assert (reply.cant_tell, reply.skipped) == (1, 1)
    assert [a.annotator_id for a in reply.answers] == ["c", "d"]
    assert reply.aggregated.class_id == 5 and reply.aggregated.confidence == pytest.approx(1.0)
    assert reply.labour == 4.0  # operations of the two answers; a decline carries no label work


def test_everyone_declining_gives_expired_with_the_counts_and_redelivery_keeps_them(hub: HubService,
                                                                                   clock: Clock) -> None:
    api = hub.annotators
    request = submit(hub, clock, m=2)
    release(api, "a", "cant_tell")
    release(api, "b", "cant_tell")
    release(api, "c", "skip")
    assert hub.kb.expire_due() == []  # declines alone do not close the sample before its deadline
    clock.now += 11
    [reply] = hub.kb.expire_due()
    assert reply.status == hub_pb2.REPLY_STATUS_EXPIRED
    assert (reply.cant_tell, reply.skipped) == (2, 1)
    assert not reply.answers and not reply.HasField("aggregated") and reply.labour == 0.0
    again = hub.submit(request, "grpc").immediate  # the device resubmits: the stored reply comes back
    assert [(r.reply_id, r.cant_tell, r.skipped) for r in again] == [(reply.reply_id, 2, 1)]
    decoded = hub_pb2.SampleReply.FromString(reply.SerializeToString())
    assert (decoded.cant_tell, decoded.skipped) == (2, 1)


def test_partial_reply_aggregates_the_one_answer_and_counts_the_decline(hub: HubService, clock: Clock) -> None:
    api = hub.annotators
    submit(hub, clock, m=3)
    assert answer(api, "a", 2) is None
    release(api, "b", "cant_tell")
    clock.now += 11
    [reply] = hub.kb.expire_due()
    assert reply.status == hub_pb2.REPLY_STATUS_PARTIAL
    assert reply.aggregated.class_id == 2 and len(reply.answers) == 1
    assert (reply.cant_tell, reply.skipped) == (1, 0)


def test_reply_without_declines_counts_zero_and_rejections_too(hub: HubService, clock: Clock) -> None:
    submit(hub, clock, m=1)
    reply = answer(hub.annotators, "a", 7)
    assert reply is not None and (reply.cant_tell, reply.skipped) == (0, 0)
    bad = make_request(DEVICE, [make_sample(DEVICE)], m=99, now=clock.now)  # over the hub's annotator limit
    [rejected] = hub.submit(bad, "grpc").immediate
    assert rejected.status == hub_pb2.REPLY_STATUS_REJECTED and (rejected.cant_tell, rejected.skipped) == (0, 0)


def test_a_resent_backlog_is_one_log_line_per_batch_not_one_per_sample(hub: HubService, clock: Clock,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A device asks again about every sample still waiting for people; a line per sample flooded the hub's log."""
    samples = [make_sample(DEVICE, top=1) for _ in range(20)]
    request = make_request(DEVICE, samples, m=2, deadline_s=60, now=clock.now)
    assert len(hub.submit(request, "grpc").accepted) == 20
    answer(hub.annotators, "a", 1)
    answer(hub.annotators, "b", 1)  # whichever sample both took first is answered
    with caplog.at_level("INFO", logger="hgen.hub.service"):
        again = hub.submit(request, "grpc")
    assert len(again.duplicates) == 20 and len(again.immediate) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "hgen.hub.service"]
    assert lines == [f"batch {request.batch_id} from {DEVICE}: 20 sample(s) asked again (already stored), "
                     "1 reply(ies) resent, the rest still wait for people"]


def test_another_devices_sample_or_batch_id_gets_nothing_of_it(hub: HubService, clock: Clock) -> None:
    """A device resending another device's sample id was treated as a redelivery and handed that device's reply;
    another device's batch id spent that batch's labour budget."""
    hub.kb.register_devices(["dev-2"])
    request = submit(hub, clock, m=1)
    assert answer(hub.annotators, "a", 4) is not None  # dev-1's reply is stored
    theirs = request.samples[0]
    stolen = make_request("dev-2", [make_sample("dev-2", sample_id=theirs.sample_id)], m=1, deadline_s=10,
                          now=clock.now)
    outcome = hub.submit(stolen, "grpc")
    assert outcome.duplicates == [] and outcome.accepted == []
    [refused] = outcome.immediate
    assert refused.device_id == "dev-2" and not refused.answers and refused.status == hub_pb2.REPLY_STATUS_REJECTED
    assert "belongs to another device" in refused.detail
    batch = make_request("dev-2", [make_sample("dev-2", top=1)], m=1, deadline_s=10, now=clock.now,
                         batch_id=request.batch_id)
    [refused] = hub.submit(batch, "grpc").immediate
    assert refused.status == hub_pb2.REPLY_STATUS_REJECTED and f"batch {request.batch_id} belongs" in refused.detail
    assert hub.metrics.snapshot()["device_impersonation"] == 2
