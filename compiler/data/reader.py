"""From a `Catalog` to uint8 arrays per split: split assignment, header checks, decoding once (cache), policy.

Split policy: records the layout places in a split keep it; the others are split per class (stratified) with the
catalog's `shares`, by seed. When the source has no validation (or test) split at all, one is carved from train with
the same share, stratified. Every split is shuffled by seed; `limit` then caps each split *before* decoding. The
compile needs every split (`empty_splits` says why one is empty and what to do, in the report) and every class in
train (`untrained_classes`).

Unreadable-file policy (`ImageOptions.on_unreadable`): `skip` (default) counts and skips corrupt or undecodable
files and reports their names, and fails with UnreadableImageError when more than `max_unreadable_fraction` of the
files are unreadable; `error` stops at the first. An image over `max_pixels` is refused from its header
(ImageTooLargeError) unless `on_oversized="skip"`. A class left with no readable image is an EmptyDatasetError.
Images whose labels cannot be used (a bad YOLO label file, a bad COCO annotation) follow the same policy, counted
apart from the unreadable files, before anything is decoded (`hgen.compiler.data.bad_labels`).
Nothing is written to the cache unless the whole load succeeds.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hgen.compiler.data import cache as cache_mod
from hgen.compiler.data import images
from hgen.compiler.data.bad_labels import bad_labels_warning, leave_out_bad_labels
from hgen.compiler.data.formats import SPLITS, Catalog, Record, named_some
from hgen.compiler.data.images import Header, ImageOptions, Preprocess
from hgen.compiler.errors import (DatasetError, EmptyDatasetError, ImageTooLargeError, InvalidArgumentError,
                                  UnreadableImageError)
from hgen.runtime.preprocess import grey, normalise

CHUNK_ROWS = 2048


@dataclass(frozen=True)
class LoadReport:
    """What a load found and did (printed by `hgen data inspect`)."""

    format: str
    origin: str
    files: int  # image files considered (after `limit`)
    decoded: int  # decoded in this load
    cached: int  # taken from the cache without decoding
    set_cached: bool  # the whole assembled set came memory-mapped from the cache
    unreadable: tuple[str, ...] = ()  # "path: reason", skipped
    oversized: tuple[str, ...] = ()  # "path: reason", skipped (on_oversized="skip")
    ignored: tuple[str, ...] = ()  # non-image files in the layout (and label files without an image)
    dropped: tuple[str, ...] = ()  # "where: why" of each label entry the format left out (empty or crowd boxes)
    carved: tuple[str, ...] = ()  # splits carved from train because the source had none
    warnings: tuple[str, ...] = ()  # what the format found that loads but may not be meant (images without labels)
    empty: tuple[str, ...] = ()  # why each empty split is empty and what to do (the compile refuses an empty split)
    modes: dict[str, int] = field(default_factory=dict)  # Pillow modes of the readable files
    sizes: tuple[tuple[int, int], ...] = ()  # (width, height) of each readable file
    bad_labels: tuple[str, ...] = ()  # "file:line: what is wrong" of each image left out for its labels (skip)


@dataclass(frozen=True)
class RawSplit:
    """uint8 images [n, H, W, C] (possibly memory-mapped), labels (classification) or boxes (detection), paths."""

    x: np.ndarray
    y: np.ndarray
    boxes: tuple[np.ndarray, ...] | None
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Loaded:
    catalog: Catalog
    preprocess: Preprocess
    splits: dict[str, RawSplit]
    report: LoadReport


def to_float(x: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """uint8 [n, ...] -> float32 x (1 / scale), as the device normalises (`hgen.runtime.preprocess.normalise`), in
    chunks so a memory-mapped set is never copied whole as uint8."""
    out = np.empty(x.shape, np.float32)
    for start in range(0, len(x), CHUNK_ROWS):
        out[start:start + CHUNK_ROWS] = normalise(x[start:start + CHUNK_ROWS], 1.0 / scale)
    return out


# ---- splits -------------------------------------------------------------------------------------------------------

def _share_counts(n: int, shares: tuple[float, ...]) -> tuple[int, ...]:
    counts = [int(round(n * s)) for s in shares[1:]]
    while n > 0 and sum(counts) >= n and any(counts):  # train keeps at least one
        counts[counts.index(max(counts))] -= 1
    return (n - sum(counts), *counts)


def assign_splits(records: tuple[Record, ...], shares: tuple[float, float, float], seed: int,
                  stratify: bool) -> tuple[dict[str, list[int]], tuple[str, ...]]:
    """Indices of records per split (see the module doc); also which splits were carved from train."""
    rng = np.random.default_rng([seed, 0xDA7A])
    parts: dict[str, list[int]] = {s: [] for s in SPLITS}
    free: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        if record.split:
            parts[record.split].append(i)
        else:
            free.setdefault(record.label if stratify else 0, []).append(i)
    present = {r.split for r in records if r.split}
    for group in sorted(free):
        order = [free[group][k] for k in rng.permutation(len(free[group]))]
        n_train, n_val, _ = _share_counts(len(order), shares)
        parts["train"] += order[:n_train]
        parts["val"] += order[n_train:n_train + n_val]
        parts["test"] += order[n_train + n_val:]
    carved = []
    for split, share in (("val", shares[1]), ("test", shares[2])):
        if split in present or parts[split] or share <= 0:
            continue
        groups: dict[int, list[int]] = {}
        for i in parts["train"]:
            groups.setdefault(records[i].label if stratify else 0, []).append(i)
        moved: list[int] = []
        for group in sorted(groups):
            order = [groups[group][k] for k in rng.permutation(len(groups[group]))]
            _, take = _share_counts(len(order), (1.0 - share, share))
            moved += order[:take]
        if moved:
            carved.append(split)
            gone = set(moved)
            parts["train"] = [i for i in parts["train"] if i not in gone]
            parts[split] = moved
    for split in SPLITS:
        parts[split] = [parts[split][k] for k in rng.permutation(len(parts[split]))]
    return parts, tuple(carved)


def untrained_classes(catalog: Catalog) -> list[str]:
    """Classification: why each class with images but none in train cannot be learnt. Only a layout's own splits do
    that (the seeded split keeps one image of every class in train): usually a misspelt split folder (`val/dogs`
    beside `train/dog`)."""
    if catalog.task != "classify" or catalog.arrays is not None:
        return []
    trained = {r.label for r in catalog.records if r.split in (None, "train")}
    if not trained:  # no train split at all: `empty_splits` says so
        return []
    where: dict[int, set[str]] = {}
    counts: Counter[int] = Counter()
    for record in catalog.records:
        if record.label not in trained:
            where.setdefault(record.label, set()).add(str(record.path.parent))
            counts[record.label] += 1
    problems = []
    for label, folders in sorted(where.items()):
        places = named_some(sorted(folders))
        problems.append(f"class '{catalog.labels[label]}' has {counts[label]} image(s) but none in train (they are in "
                        f"{places}); a model cannot learn a class it never trains on: if the name is a typo, "
                        "rename the folder (or label) to the training class it means, else add training images")
    return problems


def _has_shares(catalog: Catalog) -> bool:
    """Whether the catalog's format takes a `shares` option (YOLO's split comes from its data.yaml)."""
    from hgen.compiler.data.formats import FORMATS

    return catalog.format in FORMATS and "shares" in FORMATS.get(catalog.format).Config.model_fields


def _layout(catalog: Catalog) -> tuple[set[str], int]:
    """The splits the source itself names, and how many images it leaves to the seeded split."""
    if catalog.arrays is not None:
        only_test = set(catalog.arrays) == {"test"}
        total = sum(len(y) for _, y in catalog.arrays.values())
        return (set(), total) if only_test else (set(catalog.arrays), 0)
    return {r.split for r in catalog.records if r.split}, sum(r.split is None for r in catalog.records)


def empty_splits(catalog: Catalog, splits: dict[str, RawSplit]) -> tuple[str, ...]:
    """Why each empty split is empty and what to do: the compile trains on train, fits its thresholds on val and
    measures on test, so it refuses an empty one before training (`hgen.compiler.data.require_splits`) instead of
    failing in Keras or after training."""
    present, free = _layout(catalog)
    shares = catalog.shares
    problems = []
    for k, split in enumerate(SPLITS):
        if len(splits[split].y):
            continue
        if split in present or (split == "train" and free):
            why, fix = "its images are all unreadable or left out (see the load report)", "add readable images"
        elif split == "train":
            why = f"the data set has {' and '.join(s for s in SPLITS if s in present)} but no train split"
            fix = "add one (a train/ folder beside the others, or entries marked train)"
        elif shares[k] <= 0:
            why = f"the data set has no {split} split of its own and its share is 0 (shares " \
                  f"{','.join(f'{v:g}' for v in shares)})"
            fix = f"give {split} a share (e.g. ?shares=0.7,0.15,0.15), or add a {split} split"
        else:
            need = math.ceil(0.5 / shares[k] - 1e-9)
            each = " in a class" if catalog.task == "classify" else ""
            why = f"too few images to give it one at a share of {shares[k]:g} (that takes {need} images{each})"
            share = ", or raise its share (?shares=...)" if _has_shares(catalog) else ""
            fix = f"add images{share}, or add a {split} split"
        problems.append(f"the {split} split is empty: {why}; {fix}")
    return tuple(problems)


# ---- reading ------------------------------------------------------------------------------------------------------

def read_catalog(catalog: Catalog, options: ImageOptions | None = None, *, seed: int = 0,
                 limit: int | None = None) -> Loaded:
    """Split, check, decode (once) and resize every record; see the module doc for the policies."""
    options = options or ImageOptions()
    if limit is not None and limit < 0:
        raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
    if catalog.arrays is not None:
        return _read_arrays(catalog, options, seed, limit)
    parts, carved = assign_splits(catalog.records, catalog.shares, seed, catalog.task == "classify")
    chosen = {s: idx[:limit] if limit is not None else idx for s, idx in parts.items()}
    order = [i for s in SPLITS for i in chosen[s]]
    labelled, bad_labels = leave_out_bad_labels(catalog, order, options)

    headers: dict[int, Header] = {}
    unreadable: list[str] = []
    oversized: list[str] = []
    for i in labelled:
        path = catalog.records[i].path
        try:
            headers[i] = images.read_header(path, options.max_pixels)
        except ImageTooLargeError as exc:
            if options.on_oversized == "error":
                raise
            oversized.append(str(exc))
        except UnreadableImageError as exc:
            if options.on_unreadable == "error":
                raise
            unreadable.append(str(exc))
    colour = any(h.colour for h in headers.values())
    pre = options.preprocess(catalog.default_size, 3 if colour else 1)
    for i in [i for i in order if i in headers]:
        problem = _size_problem(catalog.records[i], headers[i], pre.exif_transpose)
        if problem is not None:
            if options.on_unreadable == "error":
                raise problem
            del headers[i]
            unreadable.append(str(problem))
    readable = [i for i in order if i in headers]

    def check(found: Decoded) -> None:
        """The policy over the header and decode failures together."""
        _check_policy(catalog, order, readable, found.skipped, [*unreadable, *found.unreadable], options)

    decoded = _decode_all(catalog, readable, pre, options, check)
    check(decoded)
    unreadable += decoded.unreadable
    kept = [i for i in readable if i not in decoded.skipped]
    row = {i: r for r, i in enumerate(kept)}
    splits = {}
    for split in SPLITS:
        idx = [i for i in chosen[split] if i in row]
        rows = [row[i] for i in idx]
        start = rows[0] if rows else 0
        xs = decoded.array[start:start + len(rows)]  # the set is in split order: a contiguous slice, no copy
        recs = [catalog.records[i] for i in idx]
        boxes = None
        if catalog.task == "detect":
            boxes = tuple(images.transform_boxes(r.boxes if r.boxes is not None else np.zeros((0, 5)),
                                                 *headers[i].upright(pre.exif_transpose), pre)
                          for i, r in zip(idx, recs))
        splits[split] = RawSplit(xs, np.array([r.label for r in recs], np.int64), boxes,
                                 tuple(str(r.path) for r in recs))
    report = LoadReport(catalog.format, catalog.origin, len(order), decoded.decoded, decoded.cached, decoded.set_cached,
                        tuple(unreadable), tuple(oversized), catalog.ignored, catalog.dropped, carved,
                        (*catalog.warnings, *bad_labels_warning(bad_labels, len(order))),
                        empty_splits(catalog, splits), dict(Counter(headers[i].mode for i in kept)),
                        tuple(headers[i].upright(pre.exif_transpose) for i in kept), tuple(bad_labels))
    return Loaded(catalog, pre, splits, report)


def _size_problem(record: Record, header: Header, exif_transpose: bool) -> UnreadableImageError | None:
    """A file whose shape is not the one its labels were drawn on (the format's recorded size, e.g. COCO's width and
    height): its normalised boxes would land in the wrong place. A proportional resize is fine; a changed aspect
    ratio, or a camera's EXIF rotation the labelling tool did not apply, is not."""
    if record.size is None:
        return None
    width, height = header.upright(exif_transpose)
    said_w, said_h = record.size
    if abs(said_w / said_h - width / height) <= 0.01 * width / height:
        return None
    turned = (width, height) != header.upright(False)
    rotated = " once its EXIF orientation is applied" if turned else ""
    return UnreadableImageError(f"{record.path}: the labels were drawn on {said_w:g} x {said_h:g}, the image is "
                                f"{width} x {height}{rotated}; its boxes would be misplaced, so it is left out")


def _check_policy(catalog: Catalog, order: list[int], readable: list[int], skipped: frozenset[int],
                  unreadable: list[str], options: ImageOptions) -> None:
    if order and len(unreadable) > options.max_unreadable_fraction * len(order):
        raise UnreadableImageError(
            f"{len(unreadable)} of {len(order)} files in {catalog.origin} are unreadable (over the "
            f"max_unreadable_fraction of {options.max_unreadable_fraction:g}; fix or remove them, or allow more with "
            f"?max_unreadable_fraction=... in the spec): "
            + "; ".join(unreadable[:10]) + (" ..." if len(unreadable) > 10 else ""))
    kept = [i for i in readable if i not in skipped]
    if not kept:
        raise EmptyDatasetError(f"{catalog.origin}: no readable images")
    if catalog.task == "classify":
        counts = Counter(catalog.records[i].label for i in kept)
        considered = Counter(catalog.records[i].label for i in order)
        empty = [catalog.labels[c] for c in sorted(considered) if counts[c] == 0]
        if empty:
            raise EmptyDatasetError(f"{catalog.origin}: class(es) {', '.join(repr(e) for e in empty)} have no "
                                    f"readable images")


@dataclass(frozen=True)
class Decoded:
    """The assembled set and what producing it took; `unreadable` holds only the decode failures (the caller has the
    header ones), so the caller decides how to merge them instead of handing over its list to be filled."""

    array: np.ndarray  # uint8 [rows, H, W, C]: `readable` in order, without `skipped` (possibly memory-mapped)
    skipped: frozenset[int]  # record indices whose header read but whose image did not decode
    unreadable: tuple[str, ...]  # "path: reason" of each skipped record, in `readable` order
    decoded: int  # rows decoded in this load
    cached: int  # rows taken from the cache (per-image or the whole set) without decoding
    set_cached: bool  # the whole set came memory-mapped from the set cache


def _decode_all(catalog: Catalog, readable: list[int], pre: Preprocess, options: ImageOptions,
                check_policy: Callable[[Decoded], None]) -> Decoded:
    """The set for `readable` (in order), from the set cache or by decoding (once per file). `check_policy` runs
    before a new set is committed to the cache, so a load the policy refuses leaves nothing behind."""
    decoder = _Decoder(catalog, readable, pre, options)
    cached = decoder.cached_set()
    return cached if cached is not None else decoder.decode(check_policy)


class _Decoder:
    """What every image of one load shares: the records, the preprocessing, the cache and the cache keys."""

    def __init__(self, catalog: Catalog, readable: list[int], pre: Preprocess, options: ImageOptions) -> None:
        self.catalog, self.readable, self.pre, self.options = catalog, readable, pre, options
        self.store = cache_mod.ImageCache(options.cache_dir) if options.cache else None
        self.item_keys: dict[int, str] = {}
        self.set_key = ""
        if self.store is not None:
            pkey = cache_mod.preprocess_key(pre)
            for i in readable:
                self.item_keys[i] = cache_mod.combine(cache_mod.file_key(catalog.records[i].path, options.cache_key),
                                                      pkey)
            self.set_key = cache_mod.combine(pkey, *(self.item_keys[i] for i in readable))

    def cached_set(self) -> Decoded | None:
        """The set an identical earlier load assembled, memory-mapped, with the skips and reasons it recorded."""
        hit = self.store.get_set(self.set_key) if self.store is not None else None
        if hit is None:
            return None
        array, meta = hit
        skipped = frozenset(self.readable[k] for k in meta.get("skipped", []))
        return Decoded(array, skipped, tuple(meta.get("unreadable", [])), 0, len(self.readable) - len(skipped), True)

    def decode(self, check_policy: Callable[[Decoded], None]) -> Decoded:
        """Assemble the set; with a cache, straight into the cache's memory-mapped file, committed (and read back
        memory-mapped) only once `check_policy` accepts the load."""
        shape = (len(self.readable), *self.pre.shape)
        if self.store is None or not self.readable:
            return self.fill(np.empty(shape, np.uint8))
        with self.store.writing_set(self.set_key, shape) as out:
            filled = self.fill(out)
            check_policy(filled)  # fail before anything is committed when the policy is broken
        self.store.put_meta(self.set_key, {"rows": len(filled.array),
                                           "skipped": [self.readable.index(i) for i in sorted(filled.skipped)],
                                           "unreadable": list(filled.unreadable), "preprocess": self.pre.model_dump()})
        hit = self.store.get_set(self.set_key)
        if hit is None:
            raise DatasetError(f"the image cache at {self.store.root} could not be read back")
        return replace(filled, array=hit[0])

    def fill(self, out: np.ndarray) -> Decoded:
        """Prepare `readable` into `out`, CHUNK_ROWS at a time so only one chunk of results is held at once. Failures
        come back from the workers as values, so the policy applies in file order: `error` raises the first."""
        rows = fresh = 0
        skipped: set[int] = set()
        reasons: list[str] = []
        workers = self.options.workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(self.readable), CHUNK_ROWS):
                batch = self.readable[start:start + CHUNK_ROWS]
                for i, result in zip(batch, pool.map(self.image, batch) if workers > 1 else map(self.image, batch)):
                    if isinstance(result, UnreadableImageError):
                        if self.options.on_unreadable == "error":
                            raise result
                        skipped.add(i)
                        reasons.append(str(result))
                        continue
                    out[rows], decoded_now = result
                    fresh += decoded_now
                    rows += 1
        return Decoded(out[:rows], frozenset(skipped), tuple(reasons), fresh, rows - fresh, False)

    def image(self, i: int) -> tuple[np.ndarray, bool] | UnreadableImageError:
        """Record i prepared, and whether it was decoded now (not cached); runs in a worker thread (Pillow and OpenCV
        drop the GIL), so an unreadable file is returned, not raised."""
        if self.store is not None:
            array = self.store.get_item(self.item_keys[i])
            if array is not None and array.shape == self.pre.shape:
                return array, False
        try:
            array = images.prepare(images.decode_image(self.catalog.records[i].path, self.pre.channels,
                                                       self.options.max_pixels, self.pre.exif_transpose), self.pre)
        except UnreadableImageError as exc:
            return exc
        if self.store is not None:
            self.store.put_item(self.item_keys[i], array)
        return array, True


def _read_arrays(catalog: Catalog, options: ImageOptions, seed: int, limit: int | None) -> Loaded:
    """In-memory sources (IDX): resize if another size is asked for, grey -> RGB if 3 channels are asked for."""
    arrays = dict(catalog.arrays or {})
    colour = any(x.ndim == 4 and x.shape[-1] == 3 for x, _ in arrays.values())
    pre = options.preprocess(catalog.default_size, 3 if colour else 1)
    only_test = set(arrays) == {"test"}
    labels = np.concatenate([y for _, y in arrays.values()])
    records = tuple(Record(Path(s), int(label), None if only_test else s)
                    for s, (_, y) in arrays.items() for label in y)
    pools = np.concatenate([np.arange(len(y)) for _, y in arrays.values()])
    parts, carved = assign_splits(records, catalog.shares, seed, True)
    splits = {}
    for split in SPLITS:
        idx = parts[split][:limit] if limit is not None else parts[split]
        xs = [_fit(arrays[records[i].path.name][0][pools[i]], pre) for i in idx]
        x = np.stack(xs) if xs else np.zeros((0, *pre.shape), np.uint8)
        splits[split] = RawSplit(x, labels[idx].astype(np.int64), None, ())
    total = sum(len(s.y) for s in splits.values())
    report = LoadReport(catalog.format, catalog.origin, total, 0, 0, False, carved=carved,
                        empty=empty_splits(catalog, splits), modes={"L" if not colour else "RGB": total})
    return Loaded(catalog, pre, splits, report)


def _fit(image: np.ndarray, pre: Preprocess) -> np.ndarray:
    image = image[..., None] if image.ndim == 2 else image
    if image.shape[-1] != pre.channels:
        image = np.repeat(image, 3, axis=-1) if pre.channels == 3 else grey(image)
    return image if image.shape == pre.shape else images.prepare(image, pre)
