"""The acceptance check's H-DNN half: expected accuracy with people (runtime gate at tau, people right with the
configured accuracy), and the rule that a retrain may not lower it, or for a re-search, not below the demand."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.hub.retrain.accept import Acceptance, check_fused
from hgen.hub.retrain.kinds import fused_scorer, get_retrain_kind


def passed() -> Acceptance:
    return Acceptance(True, 0.9, 0.9, 50, 0.8, 0.82, 500)


def test_a_lower_fused_estimate_refuses_even_when_model_only_rose() -> None:
    verdict = check_fused(passed(), current=0.93, new=0.90, tolerance=0.01)
    assert not verdict.accepted and "expected fused accuracy" in verdict.reason
    assert (verdict.current_fused_test, verdict.new_fused_test) == (0.93, 0.90)
    assert check_fused(passed(), current=0.93, new=0.925, tolerance=0.01).accepted


def test_a_research_only_has_to_keep_the_demand() -> None:
    assert check_fused(passed(), current=0.95, new=0.90, tolerance=0.0, demand=0.88).accepted
    refused = check_fused(passed(), current=0.95, new=0.85, tolerance=0.0, demand=0.88)
    assert not refused.accepted and "demand 0.8800" in refused.reason


def test_fused_score_routes_unsure_samples_to_people() -> None:
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    model.layers[0].set_weights([np.eye(2, dtype=np.float32)])  # logits = inputs
    x = np.array([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [0.0, 0.1]], np.float32)  # 2 confident, 2 unsure
    labelled = Split(x, np.array([0, 0, 1, 1]))  # the confident second one is wrong; unsure: one wrong, one right
    score = fused_scorer(get_retrain_kind("cnn"))
    assert score(model, 1.0, 0.9, labelled, 0.8) == pytest.approx((1 + 0 + 0.8 + 0.8) / 4)
    assert score(model, 1.0, 0.0, labelled, 0.8) == pytest.approx(2 / 4)  # tau 0: nobody asked, the model answers
    assert fused_scorer(get_retrain_kind("yolo")) is None


def test_images_people_labelled_leave_the_test_split() -> None:
    from hgen.hub.retrain.data import without_seen

    rng = np.random.default_rng(0)
    test = Split(rng.random((6, 4, 4, 1)).astype(np.float32), np.arange(6))
    seen = np.clip(test.x[[1, 4]] * 255, 0, 255).astype(np.uint8) / 255.0  # as decoded from the device's PNG
    kept = without_seen(test, seen.astype(np.float32))
    assert list(kept.y) == [0, 2, 3, 5]
    assert without_seen(test, np.zeros((0, 4, 4, 1), np.float32)) is test
    through_a_codec = test.x[[2]] + rng.normal(0, 0.01, (1, 4, 4, 1)).astype(np.float32)  # JPEG-like noise
    assert list(without_seen(test, through_a_codec).y) == [0, 1, 3, 4, 5]


def test_small_drops_cannot_add_up_over_retrains() -> None:
    from hgen.hub.retrain.accept import check_drift

    third = Acceptance(True, 0.9, 0.9, 50, 0.836, 0.832, 500)  # within 0.005 of the current model...
    drifted = check_drift(third, 0.8415, tolerance=0.005, first_version="1.0.0")  # ...but 0.0095 below the first
    assert not drifted.accepted and "drifted from 0.8415 (version 1.0.0) to 0.8320" in drifted.reason
    assert check_drift(third, 0.835, tolerance=0.005, first_version="1.0.0").accepted
