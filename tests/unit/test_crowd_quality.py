"""Crowd quality at the aggregator level: careless, malicious and absent people among the m asked.

Each test reproduces a fault found in the review (the careless "always the first class" person winning every tie
the model does not break, a lone early answer reported as the crowd's full agreement, one oversized box pulling
the agreed box) or checks the simulated crowd's bad-annotator behaviours that the other tests rely on.
"""

from __future__ import annotations

import numpy as np
import pytest

from hgen.hub.aggregators import AggregationInput, get_aggregator
from hgen.hub.crowd import AnnotatorProfile, SimulatedAnnotator, SimulatedCrowd
from hgen.hub.errors import CrowdConfigError
from hgen.protos import hub_pb2

CLASSES = 10


def class_answers(*pairs: tuple[str, int]) -> tuple[hub_pb2.Answer, ...]:
    return tuple(hub_pb2.Answer(annotator_id=who, class_id=c) for who, c in pairs)


def box_answer(who: str, *boxes: tuple[float, float, float, float, int]) -> hub_pb2.Answer:
    return hub_pb2.Answer(annotator_id=who, boxes=hub_pb2.BoxList(boxes=[
        hub_pb2.Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1, class_id=c) for x0, y0, x1, y1, c in boxes]))


def spammer_wins(probabilities: tuple[float, ...]) -> float:
    """Share of 1-1 splits (careless "class 0" vs honest) majority gives the careless one, over 200 samples."""
    majority, rng = get_aggregator("majority"), np.random.default_rng(0)
    wins = 0
    for i in range(200):
        truth = int(rng.integers(1, CLASSES))
        answers = class_answers(("careless", 0), ("honest", truth))
        wins += majority.aggregate(AggregationInput(f"s{i}", answers, 3, CLASSES, probabilities)).class_id == 0
    return wins / 200


def test_a_tie_the_model_does_not_break_does_not_go_to_the_first_class() -> None:
    """Before: ties fell to the lowest class id, i.e. to whoever always presses the first button, every time."""
    assert spammer_wins(()) < 0.7  # no class probabilities from the device
    top_elsewhere = tuple([0.4 / 9] * 9 + [0.6])  # the device's top guess is class 9; 0..8 equally likely
    assert spammer_wins(top_elsewhere) < 0.7
    model_says_zero = tuple([0.6] + [0.4 / 9] * 9)  # the model's preference still breaks a tie
    assert spammer_wins(model_says_zero) == 1.0
    data = AggregationInput("s-7", class_answers(("a", 4), ("b", 2)), 2, CLASSES)
    assert len({get_aggregator("majority").aggregate(data).class_id for _ in range(5)}) == 1  # a sample: one way


@pytest.mark.parametrize(("answers", "m", "expected"), [
    ((("careless", 0),), 3, 1 / 3),  # only the fastest of 3 answered before the deadline: before, 1.0
    ((("a", 3), ("b", 3)), 3, 2 / 3),  # two of three agree, the third absent: before, 1.0
    ((("a", 3), ("b", 5)), 3, 1 / 3),  # a 1-1 split of three asked: before, 0.5
])
def test_majority_confidence_is_the_share_of_the_people_asked(answers: tuple[tuple[str, int], ...], m: int,
                                                              expected: float) -> None:
    label = get_aggregator("majority").aggregate(AggregationInput("s", class_answers(*answers), m, CLASSES))
    assert label.confidence == pytest.approx(expected)


def test_dawid_skene_without_history_reports_the_share_of_the_people_asked() -> None:
    label = get_aggregator("dawid_skene").aggregate(AggregationInput("s", class_answers(("careless", 0)), 3, CLASSES))
    assert label.class_id == 0 and label.confidence == pytest.approx(1 / 3)


def test_one_oversized_box_does_not_move_the_box_two_people_agree_on() -> None:
    """A box 40% larger that still overlaps the others by IoU 0.5 joins their cluster; its mean was pulled 3 pixels
    (of 20) off the object, with full support."""
    label = get_aggregator("box_union").aggregate(AggregationInput("s", (
        box_answer("h1", (40, 40, 60, 60, 1)), box_answer("h2", (41, 40, 61, 60, 1)),
        box_answer("malicious", (40, 40, 68, 68, 1))), 3, CLASSES))
    [box] = label.boxes.boxes
    agreed = np.array([40.5, 40.0, 60.5, 60.0])
    assert np.abs(np.array([box.x_min, box.y_min, box.x_max, box.y_max]) - agreed).max() <= 0.5
    assert box.score == pytest.approx(1.0)
    huge = get_aggregator("box_union").aggregate(AggregationInput("s", (  # a huge box and one around nothing
        box_answer("h1", (40, 40, 60, 60, 1)), box_answer("h2", (41, 40, 61, 60, 1)),
        box_answer("malicious", (0, 0, 200, 200, 1), (100, 100, 120, 120, 1))), 3, CLASSES))
    scores = sorted(round(b.score, 3) for b in huge.boxes.boxes)
    assert scores == [0.333, 0.333, 0.667]  # minority boxes: the device keeps majority ones (runtime yolo MAJORITY)


def test_simulated_bad_annotators_answer_as_their_behaviour_says() -> None:
    truth = np.random.default_rng(1).integers(0, CLASSES, 300)
    careless = SimulatedAnnotator(AnnotatorProfile("careless", 0.9, behaviour="first_class"), CLASSES, seed=1)
    malicious = SimulatedAnnotator(AnnotatorProfile("malicious", 0.9, behaviour="adversarial"), CLASSES, seed=2)
    noisy = SimulatedAnnotator(AnnotatorProfile("noisy", 0.9, behaviour="random"), CLASSES, seed=3)
    assert {careless.answer(int(t)).label for t in truth} == {0}
    assert all(malicious.answer(int(t)).label != t for t in truth)
    random_labels = [noisy.answer(int(t)).label for t in truth]
    assert set(random_labels) == set(range(CLASSES)) and np.mean(random_labels == truth) < 0.25
    with pytest.raises(CrowdConfigError, match="behaviour"):
        AnnotatorProfile("x", 0.9, behaviour="lazy")


def test_one_careless_or_malicious_annotator_of_three_rarely_flips_the_majority() -> None:
    """Two honest people (accuracy 0.9) and one bad one, m=3: the majority stays near the honest pair's accuracy."""
    truth = np.random.default_rng(2).integers(0, CLASSES, 400)
    majority = get_aggregator("majority")
    for behaviour in ("first_class", "random", "adversarial"):
        profiles = [AnnotatorProfile("h1", 0.9), AnnotatorProfile("h2", 0.9), AnnotatorProfile("bad", 0.9,
                                                                                             behaviour=behaviour)]
        answers = SimulatedCrowd(profiles, CLASSES, seed=4).annotate(truth, 3)
        right = 0
        for i, (labels, names) in enumerate(zip(answers.labels, answers.annotators)):
            data = AggregationInput(f"s{i}", class_answers(*zip(names, labels.tolist())), 3, CLASSES)
            right += majority.aggregate(data).class_id == truth[i]
        assert right / len(truth) >= 0.85, (behaviour, right / len(truth))


def test_dawid_skene_stores_a_class_somebody_answered() -> None:
    """One careless person (always class 0) answered alone; EM rightly finds their answer says nothing, and its
    posterior is the class prior. Before: the prior's top class (1 here), which nobody gave, became the label."""
    rng = np.random.default_rng(5)
    history = []
    for t in range(150):
        truth = 1 if rng.random() < 0.5 else int(rng.integers(CLASSES))  # class 1 is the most common
        for who in ("h1", "h2"):
            history.append((f"t{t}", who, truth if rng.random() < 0.9 else int(rng.integers(CLASSES))))
        history.append((f"t{t}", "careless", 0))
    data = AggregationInput("now", class_answers(("careless", 0)), 3, CLASSES, (), tuple(reversed(history)))
    label = get_aggregator("dawid_skene").aggregate(data)
    assert label.class_id == 0 and label.confidence < 0.5


def test_a_lone_answer_is_no_label_under_any_aggregator() -> None:
    """dawid_skene's posterior called one answer of the three asked certain (1.0), so the knowledge base kept it as
    the label the 'strict majority of the m asked' rule was to refuse; two of three agreeing is a label under both."""
    import random

    from hgen.hub.aggregators import AggregationInput
    from hgen.hub.aggregators.dawid_skene import DawidSkene
    from hgen.hub.aggregators.majority import Majority
    from hgen.hub.kb.closing import _agreed_class

    rng = random.Random(0)
    history = tuple((f"s{i}", who, c) for i in range(100) for c in [rng.randrange(10)] for who in "abc")
    lone = (hub_pb2.Answer(annotator_id="a", class_id=7),)
    agreed = lone + (hub_pb2.Answer(annotator_id="b", class_id=7),)
    for aggregator in (Majority(), DawidSkene()):
        for answers, kept in ((lone, None), (agreed, 7)):
            label = aggregator.aggregate(AggregationInput("x", answers, 3, 10, (), history))
            assert label.class_id == 7 and _agreed_class(label, list(answers), 3) == kept, aggregator.name


def test_dawid_skene_anchored_by_gold_is_not_fooled_by_two_people_copying_each_other() -> None:
    """Two people who copy one another's wrong answers (the true class + 1) outvote an honest one in EM as in a
    vote; the gold tasks among the history pin the truth, and EM learns who is right. Before: 4 with or without."""
    rng = np.random.default_rng(0)
    truth = {f"g{i}": int(c) for i, c in enumerate(rng.integers(0, CLASSES, 60))}
    history = tuple((t, w, (c + 1) % CLASSES if w != "honest" else c) for t, c in truth.items()
                    for w in ("copy-a", "copy-b", "honest"))
    answers = tuple(hub_pb2.Answer(annotator_id=w, class_id=c) for w, c in (("copy-a", 4), ("copy-b", 4),
                                                                             ("honest", 3)))
    ds = get_aggregator("dawid_skene")
    blind = ds.aggregate(AggregationInput("s", answers, 3, CLASSES, (), history))
    anchored = ds.aggregate(AggregationInput("s", answers, 3, CLASSES, (), history, tuple(truth.items())))
    assert (blind.class_id, anchored.class_id) == (4, 3)
