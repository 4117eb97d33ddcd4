"""Images kept as uint8 until a batch is needed: a user data set's splits without holding float32 copies.

Why: 100,000 images at 96x96x3 are 2.8 GB as uint8 (memory-mapped from the decode cache, `cache.py`) but 11.1 GB as
float32, before training copies. `DecodedImages` wraps the uint8 rows and converts only the rows asked for: the
recorded `Preprocess` normalisation (`hgen.runtime.preprocess.normalise`, as the device does) and then the data set's
challenge variant, seeded per image (`[seed, split, 0x5EED, row]`), so a row reads the same whatever batch it is in.

The objects behave like a read-only float32 array where the code needs one: `len`, `shape`, `dtype`, `ndim`;
indexing with an int gives one image, with a slice, an index array or a boolean mask a lazy view (`Subset`);
`np.asarray(x)` materialises (only for small views: representative data, a batch). `concat` joins arrays and lazy
images without copying. Keras reads them per batch through `hgen.compiler.train` (`predict_logits`, `batch_sequence`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.preprocess import normalise

if TYPE_CHECKING:
    from hgen.compiler.data.challenges import Variant

CHUNK_ROWS = 2048


class Images:
    """A read-only float32 image array computed on demand; subclasses implement `rows` and `shape`."""

    dtype = np.dtype(np.float32)
    shape: tuple[int, ...]

    def rows(self, index: np.ndarray) -> np.ndarray:
        """float32 images at `index` (int positions, any order, repeats allowed), in that order."""
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            position = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"image {key} out of range for {len(self)} images")
            return self.rows(np.asarray([position]))[0]
        if isinstance(key, slice):
            return Subset(self, np.arange(len(self))[key])
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {index.shape} for {len(self)} images")
            return Subset(self, np.flatnonzero(index))
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise IndexError("lazy images take an int, a slice, a 1-D int index or a boolean mask")
        return Subset(self, np.where(index < 0, index + len(self), index))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        for start, batch in self.batches(CHUNK_ROWS):
            out[start:start + len(batch)] = batch
        return out if dtype is None else out.astype(dtype, copy=False)

    def batches(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 rows) in order, `size` rows at a time."""
        for start in range(0, len(self), size):
            yield start, self.rows(np.arange(start, min(start + size, len(self))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class DecodedImages(Images):
    """uint8 rows [n, h, w, c] (typically memory-mapped) -> float32 by `scale`, then the variant per image."""

    def __init__(self, source: np.ndarray, scale: float, variant: Variant | None = None, params: Any = None,
                 seed: Sequence[int] = (0, 0)) -> None:
        self.source, self.scale, self.variant, self.params, self.seed = source, scale, variant, params, tuple(seed)
        self.shape = tuple(source.shape)

    def rows(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, np.int64)
        order = np.argsort(index, kind="stable")
        raw = np.asarray(self.source[index[order]])  # sorted reads: sequential pages of a memory-mapped set
        out = np.empty(raw.shape, np.float32)
        out[order] = normalise(raw, 1.0 / self.scale)
        if self.variant is not None and not self.variant.identity:
            for i, row in enumerate(index):
                rng = np.random.default_rng([*self.seed, 0x5EED, int(row)])
                out[i] = self.variant.apply(out[i:i + 1], rng, self.params)[0]
        return out


class Subset(Images):
    """Rows `positions` of `parent`; a view of a view points at the first parent."""

    def __init__(self, parent: Images, positions: np.ndarray) -> None:
        positions = np.asarray(positions, np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(parent)):
            raise IndexError(f"index out of range for {len(parent)} images")
        if isinstance(parent, Subset):
            parent, positions = parent.parent, parent.positions[positions]
        self.parent, self.positions = parent, positions
        self.shape = (len(positions), *parent.shape[1:])

    def rows(self, index: np.ndarray) -> np.ndarray:
        return self.parent.rows(self.positions[np.asarray(index, np.int64)])


class Stacked(Images):
    """Parts (lazy images or float arrays of the same image shape) one after another."""

    def __init__(self, parts: Sequence[Images | np.ndarray]) -> None:
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise InvalidArgumentError(f"cannot stack images of shapes {sorted(shapes)}: resize the parts to one size")
        self.parts = list(parts)
        self.offsets = np.cumsum([0, *(len(p) for p in parts)])
        self.shape = (int(self.offsets[-1]), *shapes.pop())

    def rows(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, np.int64)
        out = np.empty((len(index), *self.shape[1:]), np.float32)
        which = np.searchsorted(self.offsets, index, side="right") - 1
        for k in np.unique(which):
            pick = which == k
            local = index[pick] - self.offsets[k]
            part = self.parts[k]
            out[pick] = part.rows(local) if isinstance(part, Images) else part[local]
        return out


def is_lazy(x: Any) -> bool:
    return isinstance(x, Images)


def concat(parts: Sequence[Images | np.ndarray]) -> Images | np.ndarray:
    """`np.concatenate` for plain arrays; a `Stacked` view when any part is lazy (nothing is converted)."""
    if not any(is_lazy(p) for p in parts):
        return np.concatenate(parts)
    return Stacked([p for p in parts if len(p)])
