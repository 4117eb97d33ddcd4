"""Replies carry the hub's queue (issue 22): the samples still open for people when the reply was made, so a device
can ask less of people while they are backed up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample
from hgen.protos import hub_pb2

DEVICE = "dev-1"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubService]:
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url}})
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    service.annotators.register("a")
    yield service
    service.close()


def test_each_reply_reports_the_samples_still_open(hub: HubService) -> None:
    samples = [make_sample(DEVICE, top=1) for _ in range(4)]
    assert len(hub.submit(make_request(DEVICE, samples, m=1, deadline_s=600, now=hub.kb.clock.now), "grpc")
               .accepted) == 4
    depths = []
    for _ in range(4):
        task = hub.annotators.next_task("a")
        assert task is not None
        reply = hub.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="a", class_id=1,
                                                            operations=1, latency_s=1.0))
        assert reply is not None
        depths.append(reply.queue_depth)
    assert depths == [3, 2, 1, 0]
