"""Learning a shifted field (issue 18): audited frames weighted as the field, tau re-chosen for the labour demand
without losing accuracy with people, a shifted field is not filtered as junk, and the original test split may pay
for a field gain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hgen.compiler.data import load_dataset
from hgen.hub.config import FieldConfig
from hgen.hub.retrain.accept import check
from hgen.hub.retrain.enhance import Enhanced
from hgen.hub.retrain.field import (FieldSet, Refit, at_equal_labour, choose_tau, field_metrics, gate_errors,
                                    importance_weights, refit, tau_after)
from hgen.hub.retrain.filter import AutoencoderFilter


def test_an_audited_confident_frame_stands_for_the_ones_people_never_saw() -> None:
    weights = importance_weights(np.array([0.3, 0.9, 0.5, 0.95]), np.array([0.5, 0.5, 0.5, 0.97]), audit_share=0.05)
    assert weights.tolist() == [1, 20, 20, 1]  # at tau is confident (the gate sends c < tau); tau is per version
    field = FieldSet(np.zeros((2, 1, 1, 1)), np.array([3, 4]), np.array([1, 3]))
    assert field.audited == 1


def test_the_weighted_field_scores_as_its_rows_repeated_without_copying_them() -> None:
    """Each audited frame was copied 1 / audit_share times (50 at the default) to be scored: 500 audited 96x96
    colour frames took 2.8 GB. The weights now weigh the mean instead."""
    import keras

    from hgen.compiler.data import Split
    from hgen.hub.retrain.kinds.cnn import CNNRetrain

    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x, y, weights = rng.random((6, 2, 2, 1)).astype(np.float32), rng.integers(0, 3, 6), np.array([1, 20, 1, 1, 20, 1])
    kind = CNNRetrain()
    weighted = kind.fused_score(model, 1.0, 0.5, FieldSet(x, y, weights), 0.9)
    repeated = kind.fused_score(model, 1.0, 0.5, Split(np.repeat(x, weights, 0), np.repeat(y, weights)), 0.9)
    assert weighted == pytest.approx(repeated)


def probs_of(confidence: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Two-class rows whose top probability is `confidence` on class `predicted`."""
    rows = np.empty((len(confidence), 2))
    rows[np.arange(len(confidence)), predicted] = confidence
    rows[np.arange(len(confidence)), 1 - predicted] = 1 - confidence
    return rows


def test_the_gate_s_share_of_errors_counts_an_audited_frame_for_the_frames_it_stands_for() -> None:
    probs = probs_of(np.array([0.55, 0.6, 0.9, 0.95]), np.array([1, 0, 1, 0]))
    labels = np.zeros(4, np.int64)  # frame 0 (under tau) and frame 2 (confident, audited) are wrong
    caught, confident = gate_errors(probs, labels, np.array([1, 1, 20, 1]), tau=0.7)
    assert caught == 1 / 21 and confident == 20 / 23  # the confident error stands for 20 frames people never saw
    assert gate_errors(probs, labels, np.ones(4), tau=0.7) == (0.5, 0.25)
    assert gate_errors(probs, np.array([1, 0, 1, 0]), np.ones(4), tau=0.7) == (1.0, 0.0)  # no errors to miss


def test_tau_is_the_most_accurate_gate_within_the_labour_demand() -> None:
    confidence = np.linspace(0.5, 0.99, 100)
    labels = np.zeros(100, np.int64)
    predicted = np.where(np.arange(100) < 30, 1, 0)  # the 30 least confident are wrong
    probs = probs_of(confidence, predicted)
    weights = np.ones(100, np.int64)
    tau, accuracy, labour, meets = choose_tau(probs, labels, weights, labour_demand=1.0, accuracy_floor=0.0,
                                              human_accuracy=0.95, m=3)
    assert meets and confidence[29] < tau < confidence[30] and accuracy == (30 * 0.95 + 70) / 100  # the wrong ones
    tight = choose_tau(probs, labels, weights, labour_demand=labour / 2, accuracy_floor=0.0, human_accuracy=0.95,
                       m=3)
    assert tight[3] and tight[2] <= labour / 2 and tight[0] < tau  # fewer people, less accuracy
    kept = choose_tau(probs, labels, weights, labour_demand=labour / 2, accuracy_floor=accuracy, human_accuracy=0.95,
                      m=3)
    assert kept[0] == tau and not kept[3]  # accuracy first: the demand is missed, and said so


def test_refit_fits_the_gate_on_the_field_and_needs_enough_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((60, 4, 4, 1)).astype(np.float32)

    class Overconfident:  # logits 10x what the field's accuracy supports
        def predict(self, x: np.ndarray, batch_size: int = 0, verbose: int = 0) -> np.ndarray:
            logits = np.zeros((len(x), 2))
            logits[:, 0] = 10.0 * (x.reshape(len(x), -1).mean(axis=1) - 0.4)
            return logits

    y = (rng.random(60) < 0.3).astype(np.int64)  # class 0 right ~70 % of the time whatever the logit says
    enhanced = Enhanced(Overconfident(), 1.0, 0.0, 60)
    config = FieldConfig(min_samples=30)
    field = FieldSet(x, y, np.ones(60, np.int64))
    chosen = refit(enhanced, field, config, labour_demand=0.5, accuracy_floor=0.0, human_accuracy=0.95)
    assert isinstance(chosen, Refit) and chosen.temperature > 1.0 and 0.0 <= chosen.tau <= 1.0
    reported = field_metrics(chosen)["field"]
    assert 0.0 <= reported["caught_errors"] <= 1.0 and 0.0 <= reported["confident_errors"] <= 0.7
    assert tau_after(chosen, 0.7) == chosen.tau
    small = FieldSet(x[:10], y[:10], np.ones(10, np.int64))
    assert refit(enhanced, small, config, labour_demand=0.5, accuracy_floor=0.0, human_accuracy=0.95) is enhanced
    assert tau_after(enhanced, 0.7) == 0.7
    # the acceptance check compares the deployed model at the same labour demand, not at its own (older) gate
    compared = at_equal_labour(Overconfident(), 1.0, chosen, field, config, labour_demand=0.5,
                               human_accuracy=0.95, noise_se=1.0)
    assert compared.current == compared.new == chosen.expected_accuracy
    assert compared.margin == 0.0  # the same model frame by frame: no noise between them


def test_a_shifted_field_is_kept_but_junk_among_it_is_not() -> None:
    data = load_dataset("digits:lowres")
    autoencoder = AutoencoderFilter.fit(data.train.x, quantile=0.99, epochs=5)
    rng = np.random.default_rng(0)
    noisy = np.clip(data.test.x[:80] + rng.normal(0, 0.3, data.test.x[:80].shape), 0, 1).astype(np.float32)
    assert autoencoder(noisy).keep.mean() < 0.2  # unlike the training data: left out by the plain filter
    junk = np.ones((4, *noisy.shape[1:]), np.float32)  # glare
    field = autoencoder(np.concatenate([noisy, junk]), field_factor=3.0)
    assert field.keep[:80].mean() > 0.9 and not field.keep[80:].any()
    clean = autoencoder(np.concatenate([data.test.x[:80], junk]), field_factor=3.0)
    assert clean.threshold == autoencoder.threshold  # in distribution the filter is unchanged


@dataclass
class Scored:
    holdout: float
    test: float


def test_the_original_split_may_pay_only_for_what_the_field_gained() -> None:
    holdout, test = np.zeros(40), np.zeros(500)

    def score(model: Scored, labelled: np.ndarray) -> float:
        return model.holdout if len(labelled) == 40 else model.test

    current = Scored(holdout=0.50, test=0.85)
    assert check(current, Scored(0.65, 0.84), holdout, test, tolerance=0.0, min_holdout=10, score=score,
                 trade=0.02).accepted
    assert not check(current, Scored(0.65, 0.82), holdout, test, tolerance=0.0, min_holdout=10, score=score,
                     trade=0.02).accepted  # more than the trade
    assert not check(current, Scored(0.505, 0.84), holdout, test, tolerance=0.0, min_holdout=10, score=score,
                     trade=0.02).accepted  # more than the field gained
    assert not check(current, Scored(0.65, 0.84), holdout, test, tolerance=0.0, min_holdout=10, score=score).accepted


def test_a_few_audited_frames_make_tau_aim_lower_for_the_labour_demand() -> None:
    """The same field seen whole (400 frames) or through 20 audits (each for 20 frames): the estimate is alike, but its
    upper bound is wider with the audits, so at the same confidence the gate is more conservative."""
    confidence = np.linspace(0.5, 0.99, 400)
    probs = probs_of(confidence, np.zeros(400, np.int64))
    labels = np.where(np.arange(400) < 120, 1, 0)  # the least confident are wrong: people help there
    many = np.ones(400, np.int64)
    few = np.where(np.arange(400) % 20 == 0, 20, 0)  # every 20th frame audited, the rest never seen
    keep = few > 0
    plain = choose_tau(probs, labels, many, labour_demand=0.05, accuracy_floor=0.0, human_accuracy=0.9, m=3)
    bound = choose_tau(probs, labels, many, labour_demand=0.05, accuracy_floor=0.0, human_accuracy=0.9, m=3,
                       labour_confidence=0.8)
    audited = choose_tau(probs[keep], labels[keep], few[keep], labour_demand=0.05, accuracy_floor=0.0,
                         human_accuracy=0.9, m=3, labour_confidence=0.8)
    assert plain[3] and bound[3] and audited[3]
    assert audited[0] < bound[0] <= plain[0] and audited[2] < bound[2] <= plain[2] <= 0.05
