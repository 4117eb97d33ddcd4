"""Synthetic detection data (H-YOLO): 1-3 digits pasted on a small grey canvas, with their boxes and classes.

`load_detection_dataset("digits-det", seed=0)` builds canvases from scikit-learn's bundled digits (always offline);
`mnist-det` uses the MNIST files `load_dataset("mnist")` finds. A built-in declares its detection set's name
(`hgen.compiler.data.builtins`, `Builtin.detection`). Digits come from the classification dataset's own
train/validation/test splits, so no test digit is ever seen in training. The challenge variants apply to the
canvases (`digits-det:noise`, `mnist-det:lowres?factor=2`). Everything is fixed by the seed.

A path loads a user's detection data set through its format (`yolo`, `coco`, `voc`; see `hgen.compiler.data.formats`):
`load_detection_dataset("/data/site/data.yaml")`, `load_detection_dataset("coco:/data/site:blur?size=128")`. Boxes
are normalised to the model input (letterbox offsets included). An image whose labels cannot be used (a bad label
line or file, a bad annotation) is left out and reported, or stops the load, by the unreadable-file policy
(`hgen.compiler.data.bad_labels`).

Each digit's box is the tight box of its ink (pixels above `INK`), normalised to [0, 1]. Digits are placed so no two
share a cell of the `grid` x `grid` detector output (one object per cell, the YOLO target stays well defined).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.compiler.data import Split, load_dataset, read_user, user_location
from hgen.compiler.data.builtins import detection_bases as detection_bases  # re-exported: declared per built-in
from hgen.compiler.data.builtins import detection_names as detection_names
from hgen.compiler.data.spec import parse_spec
from hgen.compiler.errors import DatasetError, DatasetTooLargeError
from hgen.runtime.memory import MEMINFO, free_memory_mb
from hgen.runtime.config import StrictModel

if TYPE_CHECKING:
    from pathlib import Path

    from hgen.compiler.data.formats import Location
    from hgen.compiler.data.images import ImageOptions, Preprocess
    from hgen.compiler.data.reader import LoadReport

CANVAS = 64
GRID = 8
MAX_DIGITS = 3
DIGIT_SIZES = (16, 26)  # pasted digit side in pixels, inclusive range (the 28 px source is resized)
BACKGROUND = 0.25  # grey canvas; ink is brighter
INK = 0.3  # source pixel value counted as ink for the tight box
SPLIT_SIZES = {"train": 3000, "val": 400, "test": 600}
MAX_TRIES = 50
MEMORY_SHARE = 0.6  # of the free memory a user detection set may take as float32 (training needs the rest)


@dataclass(frozen=True)
class DetectionSplit:
    """Canvases [n, H, W, 1] float32 in [0, 1]; per image an array [k, 5] of (x_min, y_min, x_max, y_max, class)."""

    x: np.ndarray
    boxes: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int | None) -> DetectionSplit:
        return self if n is None or n >= len(self) else DetectionSplit(self.x[:n], self.boxes[:n])

    def subset(self, mask: np.ndarray) -> DetectionSplit:
        index = np.flatnonzero(mask)
        return DetectionSplit(self.x[index], tuple(self.boxes[i] for i in index))


@dataclass(frozen=True)
class DetectionDataset:
    """Train/validation/test canvases with the same interface the retrain pipeline reads from `Dataset`."""

    name: str
    labels: tuple[str, ...]
    train: DetectionSplit
    val: DetectionSplit
    test: DetectionSplit
    origin: str
    seed: int
    grid: int = GRID
    preprocess: Preprocess | None = None  # user data sets: how image files become inputs
    report: LoadReport | None = None  # user data sets: what the load found
    note: str = ""  # why these are not the data asked for (the built-in's own note), for people to read

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _base_name(spec: str) -> str:
    return spec.strip().partition("?")[0].partition(":")[0]


def is_detection_spec(spec: str) -> bool:
    """A synthetic detection name, or a path whose (named or detected) format is a detection format."""
    if _base_name(spec) in detection_bases():
        return True
    from hgen.compiler.data.formats import detect_format, get_format

    try:
        location = user_location(spec)
        if location is None:
            return False
        fmt = get_format(location.format) if location.format else detect_format(location.path)
    except (DatasetError, KeyError):
        return False
    return fmt.task == "detect"


def load_detection_dataset(spec: str, *, seed: int = 0, limit: int | None = None, format: str | None = None,
                           image: ImageOptions | Mapping[str, Any] | None = None,
                           format_options: Mapping[str, Any] | StrictModel | None = None,
                           root: str | Path | None = None, allow_download: bool = False) -> DetectionDataset:
    """Build the canvases of every split, or read a user's YOLO / COCO data set; `limit` caps each split. `root` and
    `allow_download` are where the built-in's source images are looked for, as `load_dataset` takes them."""
    from hgen.compiler.data.challenges import VARIANTS

    bases = detection_bases()
    if _base_name(spec) not in bases:
        location = user_location(spec, format)
        if location is not None:
            return _load_user_detection(location, seed=seed, limit=limit, image=image, format_options=format_options)

    parsed = parse_spec(spec, sorted(bases))
    source = load_dataset(bases[parsed.base], root=root, seed=seed, allow_download=allow_download)
    variant = VARIANTS.get(parsed.variant)
    splits = []
    for index, (name, digits) in enumerate((("train", source.train), ("val", source.val), ("test", source.test))):
        n = min(SPLIT_SIZES[name], limit) if limit is not None else SPLIT_SIZES[name]
        canvases = compose(digits, n, np.random.default_rng([seed, index, 0xDE7]))
        rng = np.random.default_rng([seed, index, 0x5EED])
        splits.append(DetectionSplit(variant.apply(canvases.x, rng, parsed.params), canvases.boxes))
    return DetectionDataset(str(parsed), source.labels, *splits,
                            origin=f"{source.origin} (digits on a {CANVAS}x{CANVAS} canvas)", seed=seed,
                            note=source.note)


def _load_user_detection(location: Location, *, seed: int, limit: int | None,
                         image: ImageOptions | Mapping[str, Any] | None,
                         format_options: Mapping[str, Any] | StrictModel | None) -> DetectionDataset:
    user, loaded, xs = read_user(location, seed=seed, limit=limit, image=image, format_options=format_options,
                                 task="detect")
    check_fits_in_memory(xs, str(user.spec))  # float32 at once, as the detectors' training reads them
    splits = [DetectionSplit(np.asarray(x), loaded.splits[name].boxes or ())
              for x, name in zip(xs, ("train", "val", "test"))]
    return DetectionDataset(str(user.spec), loaded.catalog.labels, *splits, origin=loaded.catalog.origin, seed=seed,
                            preprocess=loaded.preprocess, report=loaded.report)


def check_fits_in_memory(splits: Sequence[Any], spec: str, meminfo: Path = MEMINFO) -> None:
    """A detection set becomes float32 at once (its training reads arrays): one that needs more than `MEMORY_SHARE`
    of the free memory is a DatasetTooLargeError naming the need and the ways out, before the machine swaps or the
    kernel kills the compile (1,500 images at 256x256 took 2.3 GB; a 10,000-image export at 640, tens)."""
    need = sum(int(np.prod(x.shape)) for x in splits) * 4 / 2**20
    free = free_memory_mb(meminfo)
    if free is not None and need > MEMORY_SHARE * free:
        shape = "x".join(str(d) for d in splits[0].shape[1:])
        raise DatasetTooLargeError(f"{spec}: its {sum(len(x) for x in splits)} images at {shape} need "
                                   f"{need:,.0f} MB as float32, more than {MEMORY_SHARE:.0%} of the "
                                   f"{free:,.0f} MB free: use a smaller input (?size=), fewer images (?limit=), "
                                   "or a machine with more memory")


def compose(digits: Split, n: int, rng: np.random.Generator, canvas: int = CANVAS, grid: int = GRID) -> DetectionSplit:
    """`n` canvases of 1..MAX_DIGITS digits drawn (with replacement) from `digits`."""
    if len(digits) == 0:
        raise DatasetError("no source digits to compose detection canvases from")
    images = np.full((n, canvas, canvas, 1), BACKGROUND, np.float32)
    boxes = []
    for i in range(n):
        boxes.append(_fill(images[i, :, :, 0], digits, int(rng.integers(1, MAX_DIGITS + 1)), rng, grid))
    return DetectionSplit(np.clip(images, 0.0, 1.0), tuple(boxes))


def _fill(canvas: np.ndarray, digits: Split, count: int, rng: np.random.Generator, grid: int) -> np.ndarray:
    """Paste up to `count` digits (brightest pixel wins) into free grid cells; returns their boxes [k, 5]."""
    size = canvas.shape[0]
    used: set[tuple[int, int]] = set()
    placed: list[list[float]] = []
    for _ in range(MAX_TRIES):
        if len(placed) == count:
            break
        pick = int(rng.integers(len(digits)))
        box = _paste_box(digits.x[pick, :, :, 0], size, rng)
        if box is None:
            continue
        patch, (top, left) = box
        ys, xs = np.nonzero(patch > INK)
        x0, y0, x1, y1 = left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1
        cell = (int((y0 + y1) / 2 * grid / size), int((x0 + x1) / 2 * grid / size))
        if cell in used or _overlaps(placed, (x0, y0, x1, y1), size):
            continue
        used.add(cell)
        region = canvas[top:top + patch.shape[0], left:left + patch.shape[1]]
        np.maximum(region, BACKGROUND + (1.0 - BACKGROUND) * patch, out=region)
        placed.append([x0 / size, y0 / size, x1 / size, y1 / size, float(digits.y[pick])])
    return np.array(placed, np.float64).reshape(-1, 5)


def _paste_box(digit: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]] | None:
    import cv2

    side = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
    patch = cv2.resize(digit, (side, side), interpolation=cv2.INTER_AREA)
    if not (patch > INK).any():
        return None
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    return patch, (top, left)


def _overlaps(placed: list[list[float]], box: tuple[int, int, int, int], size: int) -> bool:
    """Digits may touch but not cover each other: at most 10% of the smaller box shared."""
    x0, y0, x1, y1 = (v / size for v in box)
    for p in placed:
        inter = max(0.0, min(x1, p[2]) - max(x0, p[0])) * max(0.0, min(y1, p[3]) - max(y0, p[1]))
        smaller = min((x1 - x0) * (y1 - y0), (p[2] - p[0]) * (p[3] - p[1]))
        if inter > 0.1 * smaller:
            return True
    return False
