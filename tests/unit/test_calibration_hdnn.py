import numpy as np
import pytest

from hgen.runtime.calibration import expected_calibration_error, fit_temperature, softmax
from hgen.runtime.errors import InvalidInputError, UnknownChoiceError
from hgen.runtime.hdnn import FusionParams, get_kind, kind_names, needs_human
from hgen.runtime.hdnn.cnn import vote_counts


def sample_labels(logits, temperature, rng):
    probs = softmax(logits, temperature)
    return np.array([rng.choice(probs.shape[1], p=p) for p in probs])


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(8000, 10))
    labels = sample_labels(logits, 2.5, rng)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)


def test_temperature_scaling_reduces_ece_of_an_overconfident_model():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(5000, 10))
    labels = sample_labels(logits, 3.0, rng)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels)
    assert after < before / 3


def test_calibration_rejects_bad_shapes_and_labels():
    with pytest.raises(InvalidInputError):
        fit_temperature(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(InvalidInputError):
        fit_temperature(np.zeros((2, 4)), np.array([0, 9]))
    with pytest.raises(InvalidInputError):
        softmax(np.zeros((2, 3)), temperature=0.0)


def test_gate_sends_only_samples_below_tau():
    confidence = np.array([0.1, 0.49, 0.5, 0.9])
    np.testing.assert_array_equal(needs_human(confidence, 0.5), [True, True, False, False])
    assert not needs_human(confidence, 0.0).any()
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(InvalidInputError, match="tau"):
            needs_human(confidence, bad)


def test_cnn_fusion_matches_the_formula_by_hand():
    cnn = get_kind("cnn")
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]]))
    params = FusionParams(temperature=1.0, fusion_lambda=0.1)
    np.testing.assert_allclose(cnn.confidence(logits, params), [0.5, 0.6])
    # row 0: 0.3 + 2 * 0.1 = 0.5 ties 0.5 -> argmax keeps class 0; row 1: one vote moves 0.3 -> 0.4 < 0.6
    answers = np.array([[1, 1, -1], [1, -1, -1]])
    np.testing.assert_allclose(cnn.fused_scores(logits, answers, params), [[0.5, 0.5, 0.2], [0.6, 0.4, 0.1]])
    # three votes win: 0.3 + 0.3 > 0.5
    assert cnn.fuse(logits, np.array([[1, 1, 1], [2, 2, 2]]), params).tolist() == [1, 0]
    # no answers -> the model's own answer
    np.testing.assert_array_equal(cnn.fuse(logits, np.full((2, 3), -1), params), cnn.predict(logits, params))


def test_fusion_rejects_answers_outside_the_classes():
    with pytest.raises(InvalidInputError):
        vote_counts(np.array([[3]]), 3)
    with pytest.raises(InvalidInputError):
        get_kind("cnn").fuse(np.zeros((2, 3)), np.zeros((3, 1), int), FusionParams())


def test_unknown_kind_lists_valid_kinds():
    assert "cnn" in kind_names()
    with pytest.raises(UnknownChoiceError, match="valid choices: .*cnn"):
        get_kind("transformer")
