"""Two accounts answering alike against everyone else (hgen.hub.crowd.together), through the real hub (SQLite
knowledge base, annotator API, m = 3 of 5 people asked per sample) with no gold tasks: majority voting gives the
pair's class wherever both were asked, and nothing in the hub showed it. The pair is now named on the operator
page; two careful people beside a careless one, and honest people who often err alike on hard frames, are not. People here are
SIMULATED (seeded answers)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.crowd.together import answering_together, binomial_tail, find_pairs
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, logged_in, web_hub
from hgen.protos import hub_pb2

DEVICE = "dev-1"
PEOPLE = ("copy-a", "copy-b", "careless", "honest-1", "honest-2")
SAMPLES = 120


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubService]:
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url}})  # no gold task added
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    for name in PEOPLE:
        service.annotators.register(name)
    yield service
    service.close()


def _draw(sample_id: str, who: str) -> float:
    """A fixed draw in [0, 1) per sample and person (one person behind two accounts draws once)."""
    digest = hashlib.sha256(f"{who}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def answer(sample_id: str, who: str, truth: int) -> int:
    """copy-a and copy-b are one person (the same draw): wrong, always as class truth + 1, 40 % of the time; the
    careless person is wrong 40 % of the time too, scattered; honest people 10 %, scattered."""
    if who.startswith("copy"):
        return (truth + 1) % 10 if _draw(sample_id, "copy") < 0.4 else truth
    draw = _draw(sample_id, who)
    error = 0.4 if who == "careless" else 0.1
    return truth if draw >= error else (truth + 1 + int(draw / error * 9)) % 10


def crowd_answers(hub: HubService, people: tuple[str, ...] = PEOPLE) -> dict[str, int]:
    """SAMPLES samples, 3 of the people asked about each (a shuffled order every round, so every pair shares
    samples), each answering as `answer` says; returns the true classes."""
    samples = [make_sample(DEVICE, top=9, confidence=0.4) for _ in range(SAMPLES)]
    assert len(hub.submit(make_request(DEVICE, samples, m=3, deadline_s=600.0), "grpc").accepted) == SAMPLES
    truth = {s.sample_id: i % 10 for i, s in enumerate(samples)}
    rng = np.random.default_rng(0)
    api, answered = hub.annotators, 0
    while answered < 3 * SAMPLES:
        for who in map(str, rng.permutation(people)):
            task = api.next_task(who)
            if task is None:
                continue
            api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=who, operations=1, latency_s=1.0,
                                             class_id=answer(task.sample_id, who, truth[task.sample_id])))
            answered += 1
    return truth


def test_two_accounts_answering_alike_are_named(hub: HubService) -> None:
    truth = crowd_answers(hub)
    found = answering_together(hub.kb)
    assert found.answers == 3 * SAMPLES and found.tested == 10  # every pair of the five shared enough samples
    assert [(p.first, p.second) for p in found.pairs] == [("copy-a", "copy-b")]  # not the careless person
    pair = found.pairs[0]
    assert pair.agreement == 1.0 and pair.expected < 0.6  # each right about 60 %: 0.36 if independent
    replies = {r.sample_id: r.aggregated.class_id for r in hub.kb.replies_for(list(truth))}
    assert any(replies[s] != truth[s] for s in truth)  # what the pair costs: the hub's reply is theirs


def test_the_operator_page_names_the_pair(tmp_path: Path) -> None:
    """The pair's names are the users' own (any script, escaped as text)."""
    with web_hub(tmp_path, devices=[DEVICE]) as app:
        add_people(app, annotators=(), operators=("op",))
        page = logged_in(app, "op").get("/operator").get_data(as_text=True)
        assert 'id="together-none"' in page and "0 pairs" in page  # nothing to judge yet
        for name in PEOPLE:
            app.service.annotators.register(name)
        crowd_answers(app.service)
        page = logged_in(app, "op").get("/operator").get_data(as_text=True)
    row = re.search(r'<table id="together">.*?</table>', page, re.S)
    assert row is not None and "<td>copy-a and copy-b</td><td>100% of" in row.group(0)
    assert "honest" not in row.group(0) and "careless" not in row.group(0)


def test_honest_people_who_err_alike_on_hard_frames_are_not_named() -> None:
    """Four people on hard two-way frames (each right 60 %): any two give the same wrong class often (agreement
    0.52, not 0.36), and as often as their accuracies say."""
    rng = np.random.default_rng(1)
    people = ("p1", "p2", "p3", "p4")
    by_sample = {f"s{i}": {who: int(rng.random() < 0.4) for who in rng.choice(people, 3, replace=False)}
                 for i in range(400)}
    found = find_pairs(by_sample)
    assert found.tested == 6 and found.pairs == ()


def test_two_people_alone_cannot_be_judged() -> None:
    """Nobody else to read their accuracies off: two people who always agree may simply both be right."""
    found = find_pairs({f"s{i}": {"a": 1, "b": 1} for i in range(100)})
    assert (found.tested, found.pairs) == (0, ())


def test_binomial_tail_is_the_exact_sum() -> None:
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(3, 3, 0.5) == pytest.approx(0.125)
    assert binomial_tail(2, 4, 0.5) == pytest.approx(11 / 16)
    assert binomial_tail(1, 5, 0.0) == 0.0
