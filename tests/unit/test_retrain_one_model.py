"""The retrain's check that a Keras file is its bundle's model (hgen.hub.retrain.deployed) judged on outputs alone:
a correct pair whose answers are nearly all one class (a rare-defect model) has kappa about 0 however alike they
are, and was refused on every retrain. Detectors' grids, never compared before, are judged by the
correlation of what differs between images."""

from __future__ import annotations

import numpy as np

from hgen.hub.retrain.deployed import MIN_CORRELATION, Agreement, differs


def judged(hub: np.ndarray, device: np.ndarray) -> Agreement:
    return Agreement.of(hub, device)


def test_a_rare_class_model_whose_int8_twin_flips_one_answer_is_one_model() -> None:
    hub = np.zeros(256, np.int64)  # always "ok"
    device = hub.copy()
    device[7] = 1  # int8 says "defect" once
    found = judged(hub, device)
    assert found.kappa <= 0.0 and found.agreement > 0.99
    assert not found.disagrees


def test_defects_on_different_images_but_otherwise_alike_is_one_model() -> None:
    hub, device = np.zeros(256, np.int64), np.zeros(256, np.int64)
    hub[[0, 1]] = 1
    device[2] = 1
    assert not judged(hub, device).disagrees


def test_an_unrelated_file_still_disagrees() -> None:
    rng = np.random.default_rng(0)
    hub, device = rng.integers(0, 10, 256), rng.integers(0, 10, 256)
    found = judged(hub, device)
    assert found.agreement < 0.2 and found.disagrees


def test_a_file_always_answering_the_majority_is_not_the_bundle_that_finds_defects() -> None:
    device = np.zeros(256, np.int64)
    device[::20] = 1  # the bundle flags 13 defects
    found = judged(np.zeros(256, np.int64), device)  # a file at chance: always "ok"
    assert found.agreement > 0.94 and found.disagrees


def test_a_detectors_int8_twin_is_one_model_and_another_grid_is_not() -> None:
    """Grids [N, S, S, 5 + classes]: int8 rounding of the same outputs passes; a model whose grid shares only the
    layout (objectness low nearly everywhere, as any detector's; raw correlation about 0.5 here) does not."""
    rng = np.random.default_rng(0)
    layout = np.zeros((64, 8, 8, 15))
    layout[..., 0] = -4.0  # objectness logits: no object in most cells, in every detector
    grid = layout + rng.normal(0.0, 1.0, layout.shape)
    int8 = np.round(grid / 0.05) * 0.05  # a quantisation step of 0.05
    assert differs(grid, int8) is None
    other = layout + rng.normal(0.0, 1.0, layout.shape)
    said = differs(grid, other)
    assert said is not None and said.startswith("outputs correlated") and f"{MIN_CORRELATION}" in said
    assert differs(grid, other[..., :10]) == "outputs of shape (8, 8, 15) where the bundle's are (8, 8, 10)"


def test_classifier_scores_are_still_judged_by_their_answers() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(256, 10))
    assert differs(logits, logits * 1.01) is None
    said = differs(logits, rng.normal(size=(256, 10)))
    assert said is not None and said.startswith("the same answer on")


def test_with_a_few_images_the_raw_grids_are_compared() -> None:
    """Centring over one image leaves nothing: a lone canvas is judged on its raw outputs."""
    grid = np.random.default_rng(2).normal(size=(1, 8, 8, 15))
    assert differs(grid, grid + 0.01) is None
    assert differs(grid, -grid) is not None
