"""The simulated crowd says "can't tell" and walks away through the real hub (knowledge base, annotator API, task
timeout, deadline sweep), so benchmarks and tests can run the loop with people who do not answer everything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hgen.hub.config import parse_hub_config
from hgen.hub.crowd import AnnotatorProfile, SimulatedAnnotator, SimulatedCrowd
from hgen.hub.errors import CrowdConfigError
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.crowd import CrowdDriver
from hgen.hub.testing.samples import make_request, make_sample
from hgen.protos import hub_pb2

DEVICE = "dev-1"
DEADLINE_S = 3600.0
TIMEOUT_S = 60.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(tmp_path: Path, clock: Clock) -> Iterator[HubService]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url},
                               "tasks": {"assignment_timeout_s": TIMEOUT_S}})
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    yield service
    service.close()


def submit(hub: HubService, clock: Clock, n: int, m: int) -> list[str]:
    samples = [make_sample(DEVICE, top=3, confidence=0.2) for _ in range(n)]
    assert len(hub.submit(make_request(DEVICE, samples, m=m, deadline_s=DEADLINE_S, now=clock.now),
                          "grpc").accepted) == n
    return [s.sample_id for s in samples]


def drain(driver: CrowdDriver) -> None:
    while driver.run_once():
        pass


def test_a_person_who_walks_away_holds_the_task_until_the_timeout_then_others_answer(hub: HubService,
                                                                                     clock: Clock) -> None:
    """Before, the driver had everyone answer every task they took: the hub's timeout was never exercised by it."""
    profiles = [AnnotatorProfile("leaver", 1.0, walk_away=1.0), AnnotatorProfile("a", 1.0), AnnotatorProfile("b", 1.0)]
    driver = CrowdDriver(hub.annotators, SimulatedCrowd(profiles, 10, seed=0), lambda sample_id: 3)
    ids = submit(hub, clock, 2, m=2)
    drain(driver)
    assert driver.gone == {"leaver"}
    replies = {r.sample_id: r for r in hub.kb.replies_for(ids)}
    held = [i for i in ids if i not in replies]
    assert len(held) == 1  # the task the leaver took: nobody else may take it while it is held
    clock.now += TIMEOUT_S + 1
    hub.sweep_once()  # the timeout gives it back
    drain(driver)
    replies = {r.sample_id: r for r in hub.kb.replies_for(ids)}
    assert set(replies) == set(ids)
    assert all(r.status == hub_pb2.REPLY_STATUS_ANSWERED and r.aggregated.class_id == 3 for r in replies.values())
    assert all("leaver" not in {a.annotator_id for a in r.answers} for r in replies.values())


def test_cant_tell_goes_back_through_the_api_and_the_reply_counts_it(hub: HubService, clock: Clock) -> None:
    profiles = [AnnotatorProfile("unsure", 1.0, cant_tell=1.0), AnnotatorProfile("a", 1.0), AnnotatorProfile("b", 1.0)]
    driver = CrowdDriver(hub.annotators, SimulatedCrowd(profiles, 10, seed=0), lambda sample_id: 3,
                         hardness=lambda task: 1.0)
    ids = submit(hub, clock, 4, m=2)
    drain(driver)
    replies = hub.kb.replies_for(ids)
    assert driver.declined == sum(r.cant_tell for r in replies) > 0
    assert all(r.status == hub_pb2.REPLY_STATUS_ANSWERED and len(r.answers) == 2 for r in replies)


def test_an_honest_persons_seeded_answers_do_not_change_and_offline_refuses_decliners() -> None:
    truth = np.arange(200) % 10
    plain = SimulatedAnnotator(AnnotatorProfile("p", 0.8), 10, seed=5)
    same = SimulatedAnnotator(AnnotatorProfile("p", 0.8, cant_tell=0.0, walk_away=0.0), 10, seed=5)
    assert [plain.answer(int(t)).label for t in truth] == [same.answer(int(t)).label for t in truth]
    with pytest.raises(CrowdConfigError, match="only the hub path"):
        SimulatedCrowd([AnnotatorProfile("x", 0.9, cant_tell=0.2)], 10).annotate(truth, 1)
    with pytest.raises(CrowdConfigError, match="walk_away must be in"):
        AnnotatorProfile("y", 0.9, walk_away=1.5)
