"""Crowd quality through the real hub (knowledge base, annotator API, deadline sweep): the reply a device gets when
a careless annotator answers first, an honest one second, and the third asked never comes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.protos import hub_pb2

DEVICE = "dev-1"
SAMPLES = 12
DEADLINE_S = 600.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(tmp_path: Path, clock: Clock) -> Iterator[HubService]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url}})
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    for name in ("careless", "honest", "absent"):
        service.annotators.register(name)
    yield service
    service.close()


def answer_all(hub: HubService, annotator: str, label_of: dict[str, int | None]) -> None:
    """Answer every task the hub hands `annotator`; None: "can't tell"."""
    api = hub.annotators
    while (task := api.next_task(annotator)) is not None:
        label = label_of[task.sample_id]
        if label is None:
            api.release(task.task_id, annotator, "cant_tell", latency_s=2.0)
            continue
        api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=annotator, class_id=label,
                                         operations=1, latency_s=2.0))


def test_a_careless_first_answer_and_an_absent_third_give_a_doubtful_partial_reply(hub: HubService,
                                                                                    clock: Clock) -> None:
    """Before: every 1-1 split went to the careless person's class 0 (the device's model rates 0 and the honest
    class alike), and the reply said confidence 0.5 as if half the crowd agreed; a lone answer said 1.0."""
    # the model's top guess is class 9; every other class, 0 included, is equally likely to it
    samples = [make_sample(DEVICE, top=9, confidence=0.4) for _ in range(SAMPLES)]
    request = make_request(DEVICE, samples, m=3, deadline_s=DEADLINE_S, now=clock.now)
    assert len(hub.submit(request, "grpc").accepted) == SAMPLES
    truth = {s.sample_id: 1 + i % 8 for i, s in enumerate(samples)}
    answer_all(hub, "careless", {sample_id: 0 for sample_id in truth})
    lone = samples[0].sample_id  # the honest person can't tell this one
    answer_all(hub, "honest", {**truth, lone: None})
    clock.now += DEADLINE_S + 1
    while hub.sweep_once():
        pass
    replies = {r.sample_id: r for r in hub.kb.replies_for(list(truth))}
    assert all(r.status == hub_pb2.REPLY_STATUS_PARTIAL for r in replies.values())
    alone = replies[lone]
    assert (len(alone.answers), alone.cant_tell, alone.aggregated.class_id) == (1, 1, 0)
    assert alone.aggregated.confidence == pytest.approx(1 / 3)  # before: 1.0, as sure as three agreeing
    split = [r for sample_id, r in replies.items() if len(r.answers) == 2]
    assert all(r.aggregated.confidence == pytest.approx(1 / 3) for r in split)  # one of the three asked
    honest_won = sum(r.aggregated.class_id == truth[r.sample_id] for r in split)
    assert 0 < honest_won < len(split)  # a tie nobody can break: not always the careless one's class


def test_only_labels_a_majority_of_the_people_asked_agreed_on_are_kept_for_retraining(hub: HubService,
                                                                                      clock: Clock) -> None:
    """A lone answer at the deadline and a 1-1 split were stored as the sample's label and retrained on as if three
    people had agreed; now only a strict majority of the m asked makes a label (two of three agreeing, one absent,
    still does). The device's reply is unchanged: it fuses the answers itself."""
    from sqlalchemy import select

    from hgen.hub.kb.models import Reply

    samples = [make_sample(DEVICE, top=9, confidence=0.4) for _ in range(3)]
    assert len(hub.submit(make_request(DEVICE, samples, m=3, deadline_s=DEADLINE_S, now=clock.now),
                          "grpc").accepted) == 3
    lone, split, agreed = (s.sample_id for s in samples)
    answer_all(hub, "careless", {lone: 4, split: 0, agreed: 5})
    answer_all(hub, "honest", {lone: None, split: 2, agreed: 5})
    clock.now += DEADLINE_S + 1
    while hub.sweep_once():
        pass
    replies = {r.sample_id: r for r in hub.kb.replies_for([lone, split, agreed])}
    assert replies[lone].aggregated.class_id == 4 and len(replies[split].answers) == 2  # the device hears them all
    with hub.kb.session() as s:
        kept = dict(s.execute(select(Reply.sample_id, Reply.class_id)).tuples().all())
    assert kept == {lone: None, split: None, agreed: 5}


def test_a_paused_annotators_answers_are_left_out_when_the_sample_closes(hub: HubService, clock: Clock) -> None:
    """A careless annotator answered, then was paused (failed gold, or the operator): the open samples still closed
    with their answers, which the device fused and the 1-1 split drew as a label. Now only people not paused count;
    a sample only paused people answered closes expired (the device keeps its model's answer)."""
    samples = [make_sample(DEVICE, top=9, confidence=0.4) for _ in range(2)]
    assert len(hub.submit(make_request(DEVICE, samples, m=3, deadline_s=DEADLINE_S, now=clock.now),
                          "grpc").accepted) == 2
    shared, only_careless = (s.sample_id for s in samples)
    answer_all(hub, "careless", {shared: 0, only_careless: 0})
    hub.gold.pause("careless", "failed gold")
    answer_all(hub, "honest", {shared: 5, only_careless: None})
    clock.now += DEADLINE_S + 1
    while hub.sweep_once():
        pass
    replies = {r.sample_id: r for r in hub.kb.replies_for([shared, only_careless])}
    assert [a.annotator_id for a in replies[shared].answers] == ["honest"]
    assert replies[shared].aggregated.class_id == 5 and replies[shared].status == hub_pb2.REPLY_STATUS_PARTIAL
    assert replies[only_careless].status == hub_pb2.REPLY_STATUS_EXPIRED and not replies[only_careless].answers
    assert replies[only_careless].labour > 0  # the effort spent is still counted


def boxes(*rows: tuple[float, float, float, float, int]) -> hub_pb2.BoxList:
    return hub_pb2.BoxList(boxes=[hub_pb2.Box(x_min=a, y_min=b, x_max=c, y_max=d, class_id=k) for a, b, c, d, k in rows])


def draw_all(hub: HubService, annotator: str, drawing_of: dict[str, hub_pb2.BoxList]) -> None:
    """Draw on every box task the hub hands `annotator` that `drawing_of` names (the others are skipped)."""
    api = hub.annotators
    while (task := api.next_task(annotator)) is not None:
        if task.sample_id not in drawing_of:
            api.release(task.task_id, annotator, "skip")
            continue
        api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=annotator, operations=1, latency_s=2.0,
                                         boxes=drawing_of.pop(task.sample_id)))


def test_only_drawings_a_majority_of_the_people_asked_made_are_retraining_labels(hub: HubService,
                                                                               clock: Clock) -> None:
    """Every box reply was a retraining label: one person's box around nothing beside another's empty drawing, or
    one drawing of three asked at the deadline, was learned from as surely as three people agreeing (a class
    needed a majority since a0e0c6e). The device still gets and fuses every reply."""
    from hgen.hub.retrain.labels import box_samples
    from hgen.hub.retrain.records import RetrainStore
    from hgen.hub.testing.detection import detection_sample
    from hgen.runtime.hdnn.yolo import Detections

    image = np.full((16, 16, 1), 0.25, np.float32)
    samples = [detection_sample(DEVICE, "det", image, Detections.empty(), 0.2) for _ in range(5)]
    assert len(hub.submit(make_request(DEVICE, samples, m=3, deadline_s=DEADLINE_S, now=clock.now),
                          "grpc").accepted) == 5
    agreed, stray_box, outvoted, lone, nothing = (s.sample_id for s in samples)
    thing, stray = boxes((2, 2, 9, 12, 4)), boxes((2, 2, 9, 12, 4), (10, 10, 15, 15, 1))
    draw_all(hub, "careless", {agreed: thing, stray_box: stray, outvoted: stray, lone: thing, nothing: boxes()})
    draw_all(hub, "honest", {agreed: thing, stray_box: thing, outvoted: thing, nothing: boxes()})
    draw_all(hub, "absent", {outvoted: thing})
    clock.now += DEADLINE_S + 1
    while hub.sweep_once():
        pass
    replies = {r.sample_id: r for r in hub.kb.replies_for([agreed, stray_box, outvoted, lone, nothing])}
    assert len(replies[stray_box].aggregated.boxes.boxes) == 2  # the device hears the stray box (support 0.5)
    labelled = {s.sample_id: s.boxes for s in box_samples(hub.kb, "det", up_to=float("inf"))}
    assert set(labelled) == {agreed, outvoted, nothing}  # before: all five
    assert labelled[outvoted][:, 4].tolist() == [4]  # two of three left the stray box out: learned as nothing
    assert RetrainStore(hub.kb).new_label_count("det") == 3


def test_dawid_skene_in_the_hub_learns_from_gold_who_copies_wrong_answers(tmp_path: Path, clock: Clock) -> None:
    """Two people copying each other's wrong answers outvoted an honest one under dawid_skene too: its history held
    their gold answers, but not the gold truth. The operator kept them working (pause_below 0); the hub now pins
    the gold truth in EM and the device hears the honest class. A paused person's history is left out."""
    from hgen.hub.kb.closing import _history

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url}, "aggregator": "dawid_skene",
                               "gold": {"share": 0.5, "pause_below": 0.0}})
    hub = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    try:
        people = ("copy-a", "copy-b", "honest")
        for name in (*people, "left"):
            hub.annotators.register(name)
        hub.gold.draw = lambda: 0.0  # gold first in each run of two
        for seed in range(20):
            hub.gold.add(png_image(seed=seed + 10), seed % 7, config.num_classes, config.limits)
        samples = [make_sample(DEVICE, top=9, confidence=0.4) for _ in range(20)]
        assert len(hub.submit(make_request(DEVICE, samples, m=3, deadline_s=DEADLINE_S, now=clock.now),
                              "grpc").accepted) == 20
        api = hub.annotators
        for _ in range(40):
            for name in people:
                task = api.next_task(name)
                truth = hub.gold.truth(task.sample_id)
                label = 3 if truth is None else truth
                wrong = name != "honest"
                api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=name, operations=1, latency_s=1.0,
                                                 class_id=(label + 1) % 10 if wrong else label))
        replies = {r.sample_id: r.aggregated.class_id for r in hub.kb.replies_for([s.sample_id for s in samples])}
        assert len(replies) == 20 and {replies[s.sample_id] for s in samples[-10:]} == {3}  # before: 4
        task = api.next_task("left")
        api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="left", class_id=1, operations=1))
        hub.gold.pause("left", "gone")
        with hub.kb.session() as s:
            history, truths = _history(s, 10_000)
        assert "left" not in {w for _, w, _ in history} and len(truths) == 20
    finally:
        hub.close()
