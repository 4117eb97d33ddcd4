"""Datasets for H-CNN work: the built-in FashionMNIST, MNIST and scikit-learn digits, and a user's own images.

`load_dataset("fashion-mnist:lowres", seed=0)` returns float32 images in [0, 1] shaped [n, 28, 28, 1] and fixed
train/validation/test splits. When only a test set exists (the MNIST files shipped beside the checkout), its
images are split 60/10/30 by seed. Each built-in is one file of `hgen.compiler.data.builtins`, registered by name
(`auto` too: FashionMNIST when installed, else the digits): ask `builtin_names()` and `get_builtin(name)`.

A path loads a user's data set through a registered format (`hgen.compiler.data.formats`: folder, csv, idx for
classification; yolo, coco, voc for detection, see `detection.load_detection_dataset`), auto-detected or named:
`load_dataset("/data/cams")`, `load_dataset("folder:/data/cams:lowres?factor=2&size=64")`. Images of any size,
grey or colour, are resized to `ImageOptions.size` (default 96x96) with 3 channels when any image is colour; the
`Preprocess` recording how is on the returned `Dataset`, and decoded images are cached (`hgen.compiler.data.cache`).
Query keys that are `ImageOptions` fields (size, channels, resize, pad_value, max_pixels, ...) set image options,
keys of the format's config (e.g. `shares=0.8,0.1,0.1`) set format options, the others are the variant's
parameters; keywords `image=` / `format_options=` override the query. `Dataset.name` records every non-default
option, so `load_dataset(data.name)` reads the same data again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_origin
from urllib.parse import parse_qsl

import numpy as np

from hgen.compiler.data.builtins import DIGIT_LABELS as DIGIT_LABELS  # re-exported: callers name the digit classes
from hgen.compiler.data.builtins import BUILTINS, IMAGE_SIZE, builtin_names, get_builtin
from hgen.compiler.data.sources import RawData
from hgen.compiler.data.spec import CLASSIFY_LOADER, DETECT_LOADER, PAPER_ALIASES, DatasetSpec, parse_spec
from hgen.compiler.errors import DatasetError, DatasetSpecError, EmptyDatasetError
from hgen.runtime.config import StrictModel, did_you_mean, parse_config

if TYPE_CHECKING:
    from hgen.compiler.data.formats import DataFormat, Location
    from hgen.compiler.data.images import ImageOptions, Preprocess
    from hgen.compiler.data.detection import DetectionDataset
    from hgen.compiler.data.lazy import DecodedImages
    from hgen.compiler.data.reader import Loaded, LoadReport

VALIDATION_SIZE = 5000
TEST_ONLY_FRACTIONS = (0.6, 0.1)  # train, validation; the rest is test


@dataclass(frozen=True)
class Split:
    """Images [n, h, w, c] float32 in [0, 1] (28x28x1 for the MNIST family) and int64 labels. A user data set's
    images are `lazy.Images` (uint8 until read, float32 per batch); `np.asarray(split.x)` materialises them."""

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
    preprocess: Preprocess | None = None  # how image files become inputs (size, channels, resize, normalisation)
    report: LoadReport | None = None  # what the load found: unreadable files, cache use, sizes (user data sets)
    note: str = ""  # why these are not the data asked for (`auto` fell back), for people to read

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
    return [*builtin_names(), *PAPER_ALIASES]


def load_dataset(spec: str, *, root: str | Path | None = None, seed: int = 0, allow_download: bool = False,
                 limit: int | None = None, format: str | None = None,
                 image: ImageOptions | Mapping[str, Any] | None = None,
                 format_options: Mapping[str, Any] | StrictModel | None = None) -> Dataset:
    """Resolve, read, split and transform a dataset; `limit` caps every split (for quick tests and demos).

    `spec` is a built-in name (`fashion-mnist:lowres`) or a path (`[FORMAT:]PATH[:VARIANT][?key=value&...]`);
    `format` forces a format for a path, `image` sets `ImageOptions`, `format_options` the format's own config.
    """
    location = user_location(spec, format)
    if location is not None:
        return _load_user(location, seed=seed, limit=limit, image=image, format_options=format_options)
    if image or format_options:
        raise DatasetSpecError(f"image and format options apply to data sets read from a path; the built-in "
                               f"'{spec}' is 28x28x1 (an IDX folder given as a path can be resized)")
    parsed = parse_spec(spec, builtin_names())
    resolved = get_builtin(parsed.base).resolve(Path(root) if root else None, allow_download)
    parsed = replace(parsed, base=resolved.data.name)
    train, val, test = _split(resolved.raw, seed)
    from hgen.compiler.data.challenges import VARIANTS

    variant = VARIANTS.get(parsed.variant)
    splits = []
    for index, part in enumerate((train, val, test)):
        part = part.take(limit)
        rng = np.random.default_rng([seed, index, 0x5EED])
        splits.append(Split(variant.apply(part.x, rng, parsed.params), part.y))
    return Dataset(parsed, resolved.data.labels, *splits, origin=resolved.raw.origin, seed=seed,
                   preprocess=_builtin_preprocess(), note=resolved.note)


def _builtin_preprocess() -> Preprocess:
    from hgen.compiler.data.images import Preprocess

    return Preprocess(height=IMAGE_SIZE, width=IMAGE_SIZE, channels=1, colour_order="L")


def is_builtin(spec: str) -> bool:
    head = spec.strip().partition("?")[0]
    return PAPER_ALIASES.get(head, head).partition(":")[0] in BUILTINS


def user_location(spec: str, format: str | None = None) -> Location | None:
    """The parsed `[FORMAT:]PATH[:VARIANT][?query]` of a user data set; None for a built-in name."""
    from hgen.compiler.data.formats import Location, get_format, parse_location

    if format is None and is_builtin(spec):
        return None
    location = parse_location(spec)
    if format is not None:
        get_format(format)  # unknown names list the valid ones
        if location is None:
            head, _, query = spec.strip().partition("?")
            location = Location(None, Path(head).expanduser(), "clean", query)
        location = replace(location, format=format)
    return location


@dataclass(frozen=True)
class UserSpec:
    """A resolved user data spec: format and its config, variant and parameters, image options, canonical spec."""

    format: DataFormat
    path: Path
    config: StrictModel
    variant: str
    params: StrictModel
    options: ImageOptions
    spec: DatasetSpec


def _spec_value(value: Any, key: str) -> str:
    if isinstance(value, tuple):
        return ("x" if key == "size" else ",").join(str(v) for v in value)
    return str(value)


def _from_query(model: type[StrictModel], key: str, value: str) -> Any:
    """A query value for a tuple field is comma-separated (`shares=0.8,0.1,0.1`)."""
    annotation = model.model_fields[key].annotation
    return value.split(",") if get_origin(annotation) is tuple and "," in value else value


def resolve_user_spec(location: Location, image: ImageOptions | Mapping[str, Any] | None = None,
                      format_options: Mapping[str, Any] | StrictModel | None = None) -> UserSpec:
    """Detect (or take) the format and split the query: keys of `ImageOptions` are image options, keys of the
    format's config are format options, the rest are the variant's parameters. Keyword arguments override the
    query. The canonical spec records every non-default image and format option, so it reloads the same data."""
    from hgen.compiler.data.challenges import VARIANTS
    from hgen.compiler.data.formats import detect_format, get_format, parse_format_config
    from hgen.compiler.data.images import ImageOptions

    fmt = get_format(location.format) if location.format else detect_format(location.path)
    text = f"{location.path}:{location.variant}?{location.query}"
    try:
        pairs = dict(parse_qsl(location.query, keep_blank_values=True, strict_parsing=True)) if location.query else {}
    except ValueError:
        raise DatasetSpecError(f"bad parameters in dataset spec '{text}': use key=value&key=value") from None
    image_keys = set(ImageOptions.model_fields)
    format_keys = set(fmt.Config.model_fields) - image_keys
    chosen = VARIANTS.get(location.variant)
    known = sorted(image_keys | format_keys | set(chosen.params.model_fields))
    for key in pairs:
        if key not in known:
            raise DatasetSpecError(f"dataset spec '{text}': unknown parameter {key!r}{did_you_mean(key, known)}; "
                                   f"valid: {', '.join(known)}")
    params = parse_config(chosen.params, {k: v for k, v in pairs.items() if k not in image_keys | format_keys},
                          source=f"dataset spec '{text}' parameters", error=DatasetSpecError)
    given: dict[str, Any] = {k: v for k, v in pairs.items() if k in image_keys}
    if isinstance(image, ImageOptions):
        given.update({k: getattr(image, k) for k in image.model_fields_set})
    elif image:
        given.update(image)
    options = parse_config(ImageOptions, given, source="image options", error=DatasetSpecError)
    wanted: dict[str, Any] = {k: _from_query(fmt.Config, k, v) for k, v in pairs.items() if k in format_keys}
    if isinstance(format_options, StrictModel):
        wanted.update({k: getattr(format_options, k) for k in format_options.model_fields_set})
    elif format_options:
        wanted.update(format_options)
    config = parse_format_config(fmt, wanted)
    recorded = [*options.model_dump(exclude_defaults=True, exclude={"cache", "cache_dir", "cache_key", "workers"}).items(),
                *config.model_dump(exclude_defaults=True).items()]
    spec_pairs = tuple((k, _spec_value(v, k)) for k, v in recorded)
    path = Path(location.path).expanduser()
    spec = DatasetSpec(f"{fmt.name}:{path.resolve()}", location.variant, params, spec_pairs)
    return UserSpec(fmt, path, config, location.variant, params, options, spec)


def check_classes(catalog: Any) -> None:
    """Before any image is decoded: a classifier needs two classes (one was found out only after training), each
    with training images (a misspelt `val/dogs` beside `train/dog` was a class the model could never predict)."""
    from hgen.compiler.data.reader import untrained_classes

    if catalog.task == "classify" and len(catalog.labels) < 2:
        raise EmptyDatasetError(f"{catalog.origin}: one class found ({', '.join(catalog.labels) or 'none'}); a "
                                "classifier needs at least two: add a folder of images (or a label) per class")
    problems = untrained_classes(catalog)
    if problems:
        raise EmptyDatasetError(f"{catalog.origin}: " + "; ".join(problems))


def require_splits(data: Dataset | DetectionDataset) -> None:
    """Before training: the compile trains on train, fits temperature and tau on val and measures on test, so an
    empty split is an EmptyDatasetError saying why it is empty and what to do (it was a Keras traceback, or an
    internal message after training). Loading alone accepts one: `hgen data inspect` shows it as a warning."""
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    if all(sizes.values()):
        return
    report = data.report
    reasons = report.empty if report is not None and report.empty else [f"the {name} split is empty"
                                                                         for name, size in sizes.items() if not size]
    raise EmptyDatasetError(f"{data.origin}: " + "; ".join(reasons) + " (the compile needs train, val and test "
                            "images)")


def require_boxes(data: DetectionDataset) -> None:
    """Before training a detector: a split without a single box cannot be learnt from (train), calibrated on (val)
    or scored (test: mAP of no boxes is undefined, and an undefined accuracy passed every demand). Ultralytics users
    often keep `test:` as unlabelled images for prediction: the message says to label them or leave `test:` out."""
    empty = [name for name in ("train", "val", "test") if not any(len(b) for b in getattr(data, name).boxes)]
    carved = set(data.report.carved) if data.report is not None else set()
    if empty:
        advice = ("give it its own labelled split in data.yaml, or label more of train: too few of its images hold "
                  "boxes" if carved & set(empty) else
                  "label them, or leave the split out of data.yaml to carve it from train")
        raise EmptyDatasetError(f"{data.origin}: the {' and '.join(empty)} split(s) hold no boxes (images without "
                                "label files, or empty ones; a split carved from train takes images at random): a "
                                f"detector is trained on train, calibrated on val and scored on test; {advice}")


def load_warnings(data: Dataset | DetectionDataset) -> list[str]:
    """What the load of a user data set found odd (images without labels, skipped files...), for the compile's log:
    `hgen data inspect` shows the same lines."""
    report = getattr(data, "report", None)
    return list(report.warnings) if report is not None else []


def read_user(location: Location, *, seed: int, limit: int | None, image: ImageOptions | Mapping[str, Any] | None,
              format_options: Mapping[str, Any] | StrictModel | None, task: str | None
              ) -> tuple[UserSpec, Loaded, list[DecodedImages]]:
    """Resolve, scan and read a user data set; the images of train/val/test as `DecodedImages`: uint8 rows
    (memory-mapped from the cache) that become float32, with the variant applied per image, only when read."""
    from hgen.compiler.data.challenges import VARIANTS
    from hgen.compiler.data.formats import existing
    from hgen.compiler.data.lazy import DecodedImages
    from hgen.compiler.data.reader import read_catalog

    user = resolve_user_spec(location, image, format_options)
    catalog = user.format.scan(existing(user.path), user.config)  # absent or unlookable: a typed error
    if task is not None and catalog.task != task:
        loader = DETECT_LOADER if catalog.task == "detect" else CLASSIFY_LOADER
        kind = "detection" if catalog.task == "detect" else "classification"
        raise DatasetError(f"{user.path} is a {catalog.format} {kind} data set: load it with {loader}")
    check_classes(catalog)
    loaded = read_catalog(catalog, user.options, seed=seed, limit=limit)
    variant = VARIANTS.get(user.variant)
    xs = [DecodedImages(loaded.splits[name].x, loaded.preprocess.scale, variant, user.params, (seed, index))
          for index, name in enumerate(("train", "val", "test"))]
    return user, loaded, xs


def _load_user(location: Location, *, seed: int, limit: int | None, image: ImageOptions | Mapping[str, Any] | None,
               format_options: Mapping[str, Any] | StrictModel | None) -> Dataset:
    user, loaded, xs = read_user(location, seed=seed, limit=limit, image=image, format_options=format_options,
                                 task="classify")
    splits = [Split(x, loaded.splits[name].y) for x, name in zip(xs, ("train", "val", "test"))]
    return Dataset(user.spec, loaded.catalog.labels, *splits, origin=loaded.catalog.origin, seed=seed,
                   preprocess=loaded.preprocess, report=loaded.report)


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
