"""Synthetic detection canvases (digits-det / mnist-det) and the grid targets the detector trains on."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data.detection import (CANVAS, GRID, MAX_DIGITS, detection_names, is_detection_spec,
                                          load_detection_dataset)
from hgen.compiler.errors import DatasetSpecError
from hgen.compiler.models.grid_detector import encode_targets
from hgen.runtime.hdnn.yolo import decode


@pytest.fixture(scope="module")
def data():
    return load_detection_dataset("digits-det", seed=0, limit=200)


def test_shapes_boxes_and_classes(data) -> None:
    assert data.input_shape == (CANVAS, CANVAS, 1) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (200, 200, 200)
    assert data.train.x.dtype == np.float32 and 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    counts = [len(b) for b in data.train.boxes]
    assert min(counts) >= 1 and max(counts) <= MAX_DIGITS and len(set(counts)) > 1
    rows = np.concatenate(data.train.boxes)
    assert np.all((rows[:, :4] >= 0) & (rows[:, :4] <= 1))
    assert np.all(rows[:, 2] > rows[:, 0]) and np.all(rows[:, 3] > rows[:, 1])
    assert set(rows[:, 4].astype(int)) <= set(range(10))


def test_each_box_holds_ink_and_one_object_per_cell(data) -> None:
    for image, boxes in zip(data.train.x[:50], data.train.boxes[:50]):
        cells = set()
        for x0, y0, x1, y1, _ in boxes:
            patch = image[int(y0 * CANVAS):int(y1 * CANVAS), int(x0 * CANVAS):int(x1 * CANVAS), 0]
            assert patch.max() > 0.5  # a digit is there
            cells.add((int((y0 + y1) / 2 * GRID), int((x0 + x1) / 2 * GRID)))
        assert len(cells) == len(boxes)


def test_deterministic_by_seed_and_splits_differ() -> None:
    a = load_detection_dataset("digits-det", seed=3, limit=20)
    b = load_detection_dataset("digits-det", seed=3, limit=20)
    c = load_detection_dataset("digits-det", seed=4, limit=20)
    assert np.array_equal(a.train.x, b.train.x)
    assert all(np.array_equal(p, q) for p, q in zip(a.test.boxes, b.test.boxes))
    assert not np.array_equal(a.train.x, c.train.x)
    assert not np.array_equal(a.train.x, a.test.x)


def test_spec_variants_and_errors() -> None:
    noisy = load_detection_dataset("digits-det:noise?variance=0.05", limit=10)
    clean = load_detection_dataset("digits-det", limit=10)
    assert noisy.name == "digits-det:noise?variance=0.05"
    assert all(np.array_equal(p, q) for p, q in zip(noisy.train.boxes, clean.train.boxes))  # same scenes
    assert not np.array_equal(noisy.train.x, clean.train.x)
    assert is_detection_spec("mnist-det:lowres") and not is_detection_spec("mnist")
    assert detection_names() == ["digits-det", "mnist-det"]
    with pytest.raises(DatasetSpecError, match="'digits' is a classification data set .*'digits-det'"):
        load_detection_dataset("digits")


def test_mnist_canvases_when_the_files_are_there(mnist_required) -> None:
    data = load_detection_dataset("mnist-det", limit=20)
    assert data.input_shape == (CANVAS, CANVAS, 1) and "mnist" in data.origin


def test_targets_decode_back_to_the_true_boxes(data) -> None:
    """encode_targets (compiler) and decode (runtime) agree on the output form."""
    targets = encode_targets(data.test.boxes[:20], GRID, 10).astype(np.float64)
    eps = 1e-6
    raw = np.log(np.clip(targets, eps, 1 - eps) / (1 - np.clip(targets, eps, 1 - eps)))  # inverse sigmoid
    raw[..., 5:] = targets[..., 5:] * 20.0  # class logits
    for found, truth in zip(decode(raw), data.test.boxes[:20]):
        order, ref = np.lexsort(found.boxes.T[::-1]), np.lexsort(truth[:, :4].T[::-1])
        np.testing.assert_allclose(found.boxes[order], truth[ref, :4], atol=1e-4)
        assert found.classes[order].tolist() == truth[ref, 4].astype(int).tolist()


def test_boxes_sharing_a_grid_cell_are_counted_as_the_targets_drop_them() -> None:
    """The grid detector holds one box per cell: a crowded user set lost boxes from training without a word."""
    from hgen.compiler.models.grid_detector import encode_targets, shared_cells

    rng = np.random.default_rng(1)
    boxes = []
    for _ in range(20):
        corner = rng.uniform(0, 0.9, (int(rng.integers(0, 30)), 2))
        boxes.append(np.column_stack([corner, corner + 0.05, rng.integers(0, 3, len(corner))]))
    targets = encode_targets(boxes, 8, 3)
    total = sum(len(b) for b in boxes)
    assert 0 < shared_cells(boxes, 8) == total - int(targets[..., 0].sum())
