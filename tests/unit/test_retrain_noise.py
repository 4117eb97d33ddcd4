"""The acceptance check judges a retrain beyond the held-out labels' noise: paired standard errors of the
difference between the deployed and the new model, weighted like the field set (issue 18: single frames decided
most refusals, and a refused retrain is a round of people's labels the device does not learn from)."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.hub.config import RetrainConfig
from hgen.hub.retrain.accept import Acceptance, check, check_fused, paired_margin
from hgen.hub.retrain.kinds import get_retrain_kind, sample_scorer


def test_paired_margin_is_the_standard_error_of_the_mean_difference() -> None:
    same = np.array([1.0, 0.0, 1.0, 1.0])
    assert paired_margin(same, same, z=1.0) == 0.0  # both models answer alike: no noise between them
    current, new = np.zeros(4), np.array([1.0, 0.0, 0.0, 0.0])
    assert paired_margin(current, new, z=1.0) == pytest.approx(np.sqrt(0.75) / 4)  # sqrt(sum (d - 0.25)^2) / n
    assert paired_margin(current, new, z=2.0) == pytest.approx(2 * np.sqrt(0.75) / 4)
    assert paired_margin(current, new, z=0.0) == 0.0


def test_a_heavily_weighted_frame_widens_the_margin() -> None:
    current, new = np.zeros(20), np.zeros(20)
    new[0] = 1.0  # one frame differs
    plain = paired_margin(current, new, np.ones(20), z=1.0)
    audited = np.ones(20)
    audited[0] = 20.0  # that frame is an audit standing for 20
    assert paired_margin(current, new, audited, z=1.0) > 3 * plain


class Tagged(list):
    def __init__(self, tag: str, n: int) -> None:
        super().__init__(range(n))
        self.tag = tag


SCORES = {("cur", "h"): 0.80, ("new", "h"): 0.79, ("cur", "t"): 0.85, ("new", "t"): 0.85}


def score(model: str, labelled: Tagged) -> float:
    return SCORES[(model, labelled.tag)]


def test_a_drop_within_the_noise_passes_and_one_beyond_it_is_refused() -> None:
    holdout, test = Tagged("h", 100), Tagged("t", 1000)
    assert not check("cur", "new", holdout, test, tolerance=0.005, min_holdout=10, score=score).accepted
    assert check("cur", "new", holdout, test, tolerance=0.005, min_holdout=10, score=score,
                 holdout_margin=0.02).accepted
    refused = check("cur", "new", holdout, test, tolerance=0.005, min_holdout=10, score=score,
                    holdout_margin=0.005)
    assert not refused.accepted and "more than its noise, 0.0050" in refused.reason


def test_a_drop_within_the_noise_gains_nothing_to_trade_on_the_test_split() -> None:
    scores = SCORES | {("new", "t"): 0.84}  # the test split fell 0.01 while the held-out set fell within its noise
    verdict = check("cur", "new", Tagged("h", 100), Tagged("t", 1000), tolerance=0.0, min_holdout=10,
                    score=lambda m, s: scores[(m, s.tag)], trade=0.02, holdout_margin=0.02)
    assert not verdict.accepted and "original test accuracy fell" in verdict.reason


def test_the_fused_check_allows_its_margin_only() -> None:
    passed = Acceptance(True, 0.9, 0.9, 50, 0.8, 0.8, 500)
    assert check_fused(passed, current=0.86, new=0.84, tolerance=0.0, margin=0.03).accepted
    refused = check_fused(passed, current=0.86, new=0.82, tolerance=0.0, margin=0.03)
    assert not refused.accepted and "more than its noise, 0.0300" in refused.reason


def test_cnn_scores_each_sample_and_their_mean_is_its_metric() -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    model.layers[0].set_weights([np.eye(2, dtype=np.float32)])  # logits = inputs
    labelled = Split(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32), np.array([0, 0, 0]))
    kind = get_retrain_kind("cnn")
    per_sample = sample_scorer(kind)
    assert per_sample is not None
    np.testing.assert_array_equal(per_sample(model, labelled), [1.0, 0.0, 1.0])
    assert kind.score(model, labelled) == pytest.approx(2 / 3)
    assert sample_scorer(get_retrain_kind("yolo")) is None  # mAP is not a mean over samples: tolerance alone


def test_the_margin_is_configurable_and_zero_turns_it_off() -> None:
    assert RetrainConfig().noise_se == 1.0
    assert RetrainConfig(noise_se=0.0).noise_se == 0.0
    with pytest.raises(ValueError):
        RetrainConfig(noise_se=-1.0)
