"""Retrain building blocks: versions, label mapping, the held-out split, the autoencoder filter, acceptance."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data import load_dataset
from hgen.hub.errors import RetrainError
from hgen.hub.retrain.data import HumanSet, held_out, split_holdout
from hgen.hub.retrain.enhance import human_logits
from hgen.hub.retrain.filter import AutoencoderFilter
from hgen.hub.retrain.publish import bump_version, bundle_name_for, targets_of


def test_bump_version_is_a_patch_release() -> None:
    assert bump_version("1.0.0") == "1.0.1"
    assert bump_version("2.3.9-rc1+build") == "2.3.10"
    with pytest.raises(RetrainError, match="not semantic"):
        bump_version("latest")


def test_bundle_names_and_targets_per_device() -> None:
    assert bundle_name_for("lenet5", "x86_64", "x86_64") == "lenet5"
    assert bundle_name_for("lenet5", "x86_64", "rpi4") == "lenet5-rpi4"
    assert targets_of({"a": "rpi4", "b": "x86_64", "c": "rpi4"}, "x86_64") == {"rpi4": ("a", "c"), "x86_64": ("b",)}
    assert targets_of({}, "x86_64") == {"x86_64": ()}


def test_human_label_lifted_above_the_models_top_logit() -> None:
    teacher = np.array([[3.0, 1.0, 0.0], [0.0, 0.5, 2.0]])
    mapped = human_logits(teacher, np.array([1, 2]), margin=4.0)
    assert mapped[0, 1] == 7.0 and mapped[0, 0] == 3.0  # the model's view of the other classes is kept
    assert mapped.argmax(axis=1).tolist() == [1, 2]
    assert teacher[0, 1] == 1.0  # input untouched


def test_held_out_split_is_fixed_by_sample_id() -> None:
    ids = tuple(f"sample-{i}" for i in range(400))
    data = HumanSet(np.zeros((400, 2, 2, 1), np.float32), np.arange(400) % 10, ids)
    train, hold = split_holdout(data, 0.2, seed=0)
    assert len(train) + len(hold) == 400 and 40 < len(hold) < 120
    assert set(train.sample_ids).isdisjoint(hold.sample_ids)
    assert all(held_out(s, 0.2) for s in hold.sample_ids)
    assert split_holdout(data, 0.2, seed=0)[1].sample_ids == hold.sample_ids  # same every retrain


def test_autoencoder_marks_out_of_distribution_samples_useless() -> None:
    data = load_dataset("digits:lowres")
    autoencoder = AutoencoderFilter.fit(data.train.x, quantile=0.99, epochs=5)
    noise = np.random.default_rng(0).random((20, 28, 28, 1)).astype(np.float32)
    result = autoencoder(np.concatenate([data.test.x[:80], noise]))
    assert result.keep[:80].mean() > 0.85  # digits it has never seen are kept
    assert not result.keep[80:].any()  # noise frames are left out
    assert result.filtered_out == int((~result.keep).sum()) >= 20
