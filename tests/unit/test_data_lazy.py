"""Lazy images (hgen.compiler.data.lazy): a user data set stays uint8 until a batch is read, so 100,000 images at
96x96x3 compile without float32 copies of whole splits."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.data.challenges import VARIANTS, NoiseParams
from hgen.compiler.data.lazy import DecodedImages, Stacked, Subset, concat, is_lazy


class Counting(DecodedImages):
    """Records the largest number of rows converted at once."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.largest = 0

    def rows(self, index: np.ndarray) -> np.ndarray:
        self.largest = max(self.largest, len(index))
        return super().rows(index)


def raw(n: int = 12, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_views_index_like_the_float_array():
    source = raw()
    lazy = DecodedImages(source, 255.0)
    dense = source.astype(np.float32) * np.float32(1 / 255.0)  # as the device normalises
    np.testing.assert_array_equal(np.asarray(lazy), dense)
    np.testing.assert_array_equal(lazy[3], dense[3])
    np.testing.assert_array_equal(lazy[-1], dense[-1])
    view = lazy[2:10][::3]
    assert isinstance(view, Subset) and view.shape == (3, 8, 8, 3) and view.parent is lazy
    np.testing.assert_array_equal(np.asarray(view), dense[2:10][::3])
    picks = np.array([5, 0, 5, 11])
    np.testing.assert_array_equal(np.asarray(lazy[picks]), dense[picks])
    mask = np.arange(12) % 4 == 1
    np.testing.assert_array_equal(np.asarray(lazy[mask]), dense[mask])
    with pytest.raises(IndexError):
        lazy[12]
    with pytest.raises(IndexError):
        lazy[np.array([0, 12])]


def test_concat_stacks_lazy_and_dense_parts_without_converting():
    source, extra = raw(), np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    lazy = Counting(source, 255.0)
    joined = concat([lazy[:5], extra, lazy[7:]])
    assert isinstance(joined, Stacked) and len(joined) == 14 and lazy.largest == 0
    dense = np.concatenate([source[:5] / np.float32(255), extra, source[7:] / np.float32(255)]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(joined), dense, rtol=0, atol=1e-7)
    order = np.array([13, 5, 0, 8])
    np.testing.assert_allclose(np.asarray(joined[order]), dense[order], rtol=0, atol=1e-7)
    plain = concat([extra, extra])
    assert not is_lazy(plain) and plain.shape == (8, 8, 8, 3)


def test_a_seeded_variant_reads_the_same_row_in_any_batch():
    source = raw(20)
    lazy = DecodedImages(source, 255.0, VARIANTS.get("noise"), NoiseParams(variance=0.1), seed=(3, 0))
    whole = np.asarray(lazy)
    again = np.concatenate([np.asarray(lazy[i:i + 7]) for i in range(0, 20, 7)])
    np.testing.assert_array_equal(whole, again)
    np.testing.assert_array_equal(np.asarray(lazy[np.array([19, 4])]), whole[[19, 4]])
    other_split = np.asarray(DecodedImages(source, 255.0, VARIANTS.get("noise"), NoiseParams(variance=0.1),
                                           seed=(3, 1)))
    assert not np.allclose(whole, other_split)  # splits draw their own noise


def test_training_and_prediction_read_lazy_images_one_batch_at_a_time():
    """The compile's training (with BatchNorm settling), distillation and logits never convert a whole split."""
    import keras

    from hgen.compiler.train import DistillConfig, TrainConfig, distill, predict_logits, train_classifier

    n, batch = 300, 32
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    source = rng.integers(0, 60, (n, 8, 8, 3), dtype=np.uint8)
    source[labels == 1] += 150  # class 1 is bright: learnable in a few epochs
    lazy = Counting(source, 255.0)

    def build() -> keras.Model:
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                                 keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])

    model = build()
    train_classifier(model, Split(lazy, labels), config=TrainConfig(epochs=4, batch_size=batch, freeze_bn_epochs=1,
                                                                    learning_rate=1e-2))
    assert 0 < lazy.largest <= 128 < n  # fit reads `batch` rows at a time, settle_batch_norm 128
    logits = predict_logits(model, lazy)
    assert logits.shape == (n, 2) and float(np.mean(logits.argmax(1) == labels)) > 0.9
    np.testing.assert_allclose(logits, predict_logits(model, source.astype(np.float32) / 255.0), atol=1e-4)
    lazy.largest = 0
    distill(build(), logits, Split(lazy, labels), DistillConfig(epochs=1, batch_size=batch))
    assert lazy.largest == batch  # the fine-tune and its BatchNorm settling read `batch` rows at a time
