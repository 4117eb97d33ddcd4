"""Aggregation strategies: registry lookup, majority voting, Dawid-Skene for annotators of unequal skill."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.hub.aggregators import AggregationInput, aggregator_names, get_aggregator
from hgen.hub.crowd import AnnotatorProfile, SimulatedCrowd
from hgen.hub.errors import AggregationError, UnknownAggregatorError
from hgen.protos import hub_pb2


def class_answers(labels: list[int]) -> tuple[hub_pb2.Answer, ...]:
    return tuple(hub_pb2.Answer(annotator_id=f"a{i}", class_id=c) for i, c in enumerate(labels))


def test_unknown_aggregator_lists_the_valid_names() -> None:
    with pytest.raises(UnknownAggregatorError, match="majority"):
        get_aggregator("median")
    assert {"majority", "dawid_skene"} <= set(aggregator_names())


def test_majority_counts_votes_and_breaks_ties_with_the_model() -> None:
    majority = get_aggregator("majority")
    assert majority.aggregate(AggregationInput("s", class_answers([3, 5, 3]), 3, 10)).class_id == 3
    probs = tuple([0.0] * 5 + [0.6] + [0.0] * 3 + [0.4])
    tie = majority.aggregate(AggregationInput("s", class_answers([9, 5]), 2, 10, probs))
    assert tie.class_id == 5 and tie.confidence == pytest.approx(0.5)
    with pytest.raises(AggregationError):
        majority.aggregate(AggregationInput("s", (hub_pb2.Answer(boxes=hub_pb2.BoxList()),), 1, 10))


def test_dawid_skene_beats_majority_when_skills_differ() -> None:
    # Two experts and three near-spammers on hard samples: the spammers outvote the experts, EM learns
    # from the history that their answers carry little information and follows the experts.
    classes, tasks, m = 4, 150, 5
    profiles = [AnnotatorProfile(f"expert{i}", 0.95) for i in range(2)]
    profiles += [AnnotatorProfile(f"spammer{i}", 0.5) for i in range(3)]
    crowd = SimulatedCrowd(profiles, classes, seed=3)
    truth = np.random.default_rng(0).integers(0, classes, tasks)
    history, per_task = [], []
    for t, label in enumerate(truth):
        answers = [(a.name, a.answer(int(label), hardness=1.0).label) for a in crowd.annotators]
        history += [(f"t{t}", name, c) for name, c in answers]
        per_task.append(tuple(hub_pb2.Answer(annotator_id=n, class_id=c) for n, c in answers))
    majority, ds = get_aggregator("majority"), get_aggregator("dawid_skene")
    checked = range(0, tasks, 15)
    maj_right = sum(majority.aggregate(AggregationInput(f"t{t}", per_task[t], m, classes)).class_id == truth[t]
                    for t in checked)
    ds_right = sum(ds.aggregate(AggregationInput(f"t{t}", per_task[t], m, classes, (), tuple(history))).class_id
                   == truth[t] for t in checked)
    assert ds_right > maj_right, (ds_right, maj_right, len(checked))
    assert ds_right >= 0.8 * len(checked)


def test_dawid_skene_without_history_falls_back_to_votes() -> None:
    label = get_aggregator("dawid_skene").aggregate(AggregationInput("s", class_answers([2, 2, 1]), 3, 10))
    assert label.class_id == 2 and label.aggregator == "dawid_skene"
