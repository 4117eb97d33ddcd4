"""The retrain's check that a Keras file is its bundle's model (hgen.hub.retrain.deployed) judged on answers alone:
a correct pair whose answers are nearly all one class (a rare-defect model) has kappa about 0 however alike they
are, and was refused on every retrain."""

from __future__ import annotations

import numpy as np

from hgen.hub.retrain.deployed import Agreement, kappa


def judged(hub: np.ndarray, device: np.ndarray) -> Agreement:
    return Agreement(float(np.mean(hub == device)), kappa(hub, device), len(hub))


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
