"""The hub's side of delivery (issue 17): the unacknowledged backlog is paged in bounded steps, and a re-sent
sample gets its reply again even when the hub marked it delivered (the broker may have lost it after its PUBACK).
On SQLite and on a real PostgreSQL started by the test run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.protos import hub_pb2

DEVICE = "dev-1"


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    clock = Clock()
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock)
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url, "image_dir": str(tmp_path / "img")}})
    service = HubService(config, kb, clock=clock)
    service.annotators.register("a", simulated=True)
    yield service, clock
    service.close()


def answer_all(service: HubService, clock: Clock, n: int) -> list[str]:
    samples = [make_sample(DEVICE) for _ in range(n)]
    service.submit(make_request(DEVICE, samples, m=1, now=clock.now), "mqtt")
    order = []
    for _ in range(n):
        clock.now += 1.0  # replies made one after another; two in the same instant are ordered by sample id
        task = service.annotators.next_task("a")
        service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="a", class_id=1,
                                                        operations=1, simulated=True))
        order.append(task.sample_id)
    return order


def test_undelivered_backlog_is_paged_oldest_first_without_repeats(hub) -> None:
    service, clock = hub
    order = answer_all(service, clock, 5)
    seen, cursor = [], (-1.0, "")
    while page := service.kb.undelivered("mqtt", 2, after=cursor):
        assert len(page) <= 2
        seen += [reply.sample_id for _, reply in page]
        cursor = page[-1][0]
    assert seen == order
    service.kb.mark_delivered(order[:2])
    assert [r.sample_id for _, r in service.kb.undelivered("mqtt")] == order[2:]
    assert service.kb.undelivered("grpc") == []


def test_a_resent_sample_gets_its_reply_again_even_if_marked_delivered(hub) -> None:
    service, clock = hub
    (sample_id,) = answer_all(service, clock, 1)
    service.kb.mark_delivered([sample_id])
    stored = service.kb.replies_for([sample_id])[0]
    again = service.submit(make_request(DEVICE, [make_sample(DEVICE, sample_id=sample_id)], m=1, now=clock.now),
                           "mqtt")
    assert again.duplicates == [sample_id]
    assert [r.reply_id for r in again.immediate] == [stored.reply_id]  # the same reply, from the knowledge base
