"""Datasets for H-CNN work: FashionMNIST, MNIST and scikit-learn digits, with the paper's challenge variants.

`load_dataset("fashion-mnist:lowres", seed=0)` returns float32 images in [0, 1] shaped [n, 28, 28, 1] and fixed
train/validation/test splits. When only a test set exists (the MNIST files shipped beside the checkout), its
images are split 60/10/30 by seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hgen.compiler.data.sources import IdxSource, RawData, locate
from hgen.compiler.data.spec import PAPER_ALIASES, DatasetSpec, parse_spec
from hgen.compiler.errors import DatasetError, DatasetNotFoundError

IMAGE_SIZE = 28
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
DIGIT_LABELS = tuple(str(d) for d in range(10))
SOURCES = {
    "mnist": IdxSource("mnist", None, "mnist", "put the MNIST IDX files in $HGEN_DATA/mnist/"),
    "fashion-mnist": IdxSource("fashion-mnist", "/usr/share/datasets/fashion-mnist", "fashion_mnist",
                               "apt-get install dataset-fashion-mnist"),
}
LABELS = {"mnist": DIGIT_LABELS, "fashion-mnist": FASHION_LABELS, "digits": DIGIT_LABELS}
BASES = ["mnist", "fashion-mnist", "digits", "auto"]
VALIDATION_SIZE = 5000
TEST_ONLY_FRACTIONS = (0.6, 0.1)  # train, validation; the rest is test


@dataclass(frozen=True)
class Split:
    """Images [n, 28, 28, 1] float32 in [0, 1] and int64 labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int | None) -> Split:
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    """A dataset ready for training and evaluation, with where it came from."""

    spec: DatasetSpec
    labels: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    origin: str
    seed: int

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def dataset_names() -> list[str]:
    return BASES + list(PAPER_ALIASES)


def load_dataset(spec: str, *, root: str | Path | None = None, seed: int = 0, allow_download: bool = False,
                 limit: int | None = None) -> Dataset:
    """Resolve, read, split and transform a dataset; `limit` caps every split (for quick tests and demos)."""
    parsed = parse_spec(spec, BASES)
    base, raw = _resolve_base(parsed.base, Path(root) if root else None, allow_download)
    parsed = replace(parsed, base=base)
    train, val, test = _split(raw, seed)
    from hgen.compiler.data.challenges import VARIANTS

    variant = VARIANTS.get(parsed.variant)
    splits = []
    for index, part in enumerate((train, val, test)):
        part = part.take(limit)
        rng = np.random.default_rng([seed, index, 0x5EED])
        splits.append(Split(variant.apply(part.x, rng, parsed.params), part.y))
    return Dataset(parsed, LABELS[base], *splits, origin=raw.origin, seed=seed)


def _resolve_base(base: str, root: Path | None, allow_download: bool) -> tuple[str, RawData]:
    if base == "digits":
        return base, _digits()
    if base == "auto":
        try:
            return "fashion-mnist", locate(SOURCES["fashion-mnist"], root, allow_download)
        except DatasetNotFoundError:
            return "digits", _digits()
    return base, locate(SOURCES[base], root, allow_download)


def _digits() -> RawData:
    """scikit-learn's bundled 8x8 digits, scaled to 0..255 and resized to 28x28: always available offline."""
    import cv2
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0 * 255.0).astype(np.float32)
    resized = np.stack([cv2.resize(im, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR) for im in images])
    return RawData({"test": (np.clip(resized, 0, 255).astype(np.uint8), bunch.target.astype(np.int64))},
                   "sklearn.datasets.load_digits (bundled)")


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"expected images [n, {IMAGE_SIZE}, {IMAGE_SIZE}], got {x.shape}")
    return (x.astype(np.float32) / 255.0)[..., None]


def _split(raw: RawData, seed: int) -> tuple[Split, Split, Split]:
    """Fixed by seed: train/validation from the official training set, else 60/10/30 of the test set."""
    rng = np.random.default_rng([seed, 0xDA7A])
    x_test, y_test = raw.splits["test"]
    if "train" in raw.splits:
        x_train, y_train = raw.splits["train"]
        order = rng.permutation(len(y_train))
        val_idx, train_idx = order[:VALIDATION_SIZE], order[VALIDATION_SIZE:]
        test = Split(_to_float(x_test), y_test)
        return (Split(_to_float(x_train[train_idx]), y_train[train_idx]),
                Split(_to_float(x_train[val_idx]), y_train[val_idx]), test)
    order = rng.permutation(len(y_test))
    n_train = int(len(order) * TEST_ONLY_FRACTIONS[0])
    n_val = int(len(order) * TEST_ONLY_FRACTIONS[1])
    parts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
    return tuple(Split(_to_float(x_test[idx]), y_test[idx]) for idx in parts)  # type: ignore[return-value]
