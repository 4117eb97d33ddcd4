"""int8 calibration images (hgen.compiler.lowering.tflite.representative_sample): every class is in them, even when
the data set is sorted by class or a class is rare, and the pick is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.lowering.tflite import representative_sample


def _rows(picked: np.ndarray) -> np.ndarray:
    return picked[:, 0].astype(np.int64)  # each image's single value is its row number


def test_a_data_set_sorted_by_class_gives_every_class_the_same_share() -> None:
    labels = np.repeat(np.arange(10), 300)  # sorted: its first 500 rows hold two classes only
    images = np.arange(len(labels), dtype=np.float32)[:, None]
    picked = representative_sample(images, labels, 500, seed=0)
    assert picked.dtype == np.float32 and len(picked) == 500
    assert np.bincount(labels[_rows(picked)], minlength=10).tolist() == [50] * 10
    assert len(set(_rows(picked).tolist())) == 500
    assert np.array_equal(picked, representative_sample(images, labels, 500, seed=0))
    assert not np.array_equal(picked, representative_sample(images, labels, 500, seed=1))


def test_a_rare_class_is_kept_whole_and_the_rest_tops_up_the_count() -> None:
    labels = np.array([0] * 2000 + [1] * 5 + [2] * 400)
    images = np.arange(len(labels), dtype=np.float32)[:, None]
    counts = np.bincount(labels[_rows(representative_sample(images, labels, 300, seed=0))], minlength=3)
    assert counts[1] == 5 and counts.sum() == 300 and counts[0] >= 100 and counts[2] >= 100


def test_fewer_images_than_asked_gives_them_all_and_bad_labels_are_refused() -> None:
    labels = np.array([0, 1, 1, 2])
    assert len(representative_sample(np.zeros((4, 2, 2, 1)), labels, 500)) == 4
    with pytest.raises(InvalidArgumentError, match="one class label per image"):
        representative_sample(np.zeros((4, 2, 2, 1)), labels[:3])
