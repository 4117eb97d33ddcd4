"""`coco`: COCO instances JSON (images, annotations with `bbox` [x, y, w, h] in pixels, categories) + image folder.

The path is a JSON file, or a folder holding `annotations/instances_<split>*.json` (split from the file name:
train/val/test), a single `*.json` with COCO keys (e.g. Roboflow's `_annotations.coco.json`), or split folders
(`train/`, `valid/`, `test/`, as Roboflow exports them) each holding one such JSON (split from the folder's name).
Images are looked up under `images_dir` if given, else beside the JSON, in `images/`, in a folder named like the
JSON's split (`train2017/`), and in the folder above `annotations/`. Segmentation is ignored; `iscrowd` boxes (a
region of many objects, not one object: COCO's own evaluation ignores them) are left out unless `skip_crowd` is
false. Categories keep their ids' order (any ids, gaps allowed). An image without annotations has no objects. A box
without area (zero width or height) is left out; both are reported (`dropped`). An image listed but missing on disk
is a MissingImageError (listing them); an entry with a missing or mistyped field, or an annotation whose image_id is
not in `images`, is a LabelError naming the file and the entry (`annotations[12].image_id`). An annotation whose
category is missing or unknown, or whose box is malformed or leaves the image (beyond `tolerance` pixels), makes its
image a `BadLabels` record naming the entry (`annotations[12].bbox`): the reader leaves the image out and reports it,
or stops with a LabelError, by the unreadable-file policy (`hgen.compiler.data.bad_labels` says why the whole image
and not only the box). Each record keeps the JSON's width and height, so the reader can refuse an image whose file
has another shape (its boxes would be misplaced).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import Field, field_validator

from hgen.compiler.data.bad_labels import BadLabels
from hgen.compiler.data.formats import FORMATS, SPLIT_ALIASES, Catalog, DataFormat, Record, class_name, pixel_box
from hgen.compiler.data.formats.folder import check_shares
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError, LabelError, MissingImageError
from hgen.runtime.config import StrictModel

COCO_KEYS = {"images", "annotations", "categories"}
PEEK_BYTES = 1 << 16
T = TypeVar("T")


class CocoConfig(StrictModel):
    images_dir: str | None = Field(None, title="Folder the JSON's file_name entries are relative to (default: "
                                   "found next to the JSON)")
    skip_crowd: bool = Field(True, title="Leave out annotations with iscrowd = 1 (regions of many objects)")
    tolerance: float = Field(1.0, ge=0.0, title="Pixels a box may reach outside its image before it is an error")
    shares: tuple[float, float, float] = Field((0.7, 0.15, 0.15), title="(train, val, test) shares when the JSON "
                                               "file names give no split")

    validate_shares = field_validator("shares")(check_shares)


def _looks_coco(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(PEEK_BYTES).decode("utf-8", "ignore")
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def annotation_files(path: Path) -> list[tuple[Path, str | None]]:
    """The COCO JSON file(s) of `path`, each with the split it holds (None: the seeded split of `shares`)."""
    if path.is_file():
        return [(path, None)] if path.suffix.lower() == ".json" else []
    if not path.is_dir():
        return []
    inside = sorted((path / "annotations").glob("instances*.json")) if (path / "annotations").is_dir() else []
    if inside:
        return [(p, _split_of(p) if len(inside) > 1 else None) for p in inside]
    top = [p for p in sorted(path.glob("*.json")) if _looks_coco(p)][:1]
    return [(top[0], None)] if top else _split_folders(path)


def _split_folders(path: Path) -> list[tuple[Path, str | None]]:
    """Roboflow's export root: train/, valid/, test/ each holding one COCO JSON (`_annotations.coco.json`) beside its
    images; the split is the folder's name."""
    found = []
    for child in sorted(p for p in path.iterdir() if p.name.lower() in SPLIT_ALIASES and p.is_dir()):
        files = [p for p in sorted(child.glob("*.json")) if _looks_coco(p)]
        if len(files) > 1:
            raise DatasetFormatError(f"{child}: {len(files)} COCO JSON files ({', '.join(p.name for p in files)}); "
                                     "a split folder holds one: remove the others, or give the file as the path")
        found += [(files[0], SPLIT_ALIASES[child.name.lower()])] if files else []
    return found


def _split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    for token, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if re.search(rf"(^|[_\-.]){token}", stem):
            return split
    return None


def _image_dirs(annotation: Path, config: CocoConfig, root: Path) -> list[Path]:
    if config.images_dir:
        base = Path(config.images_dir).expanduser()
        return [base if base.is_absolute() else root / base]
    parent = annotation.parent
    above = parent.parent if parent.name == "annotations" else parent
    suffix = annotation.stem.split("_", 1)[1] if "_" in annotation.stem else ""
    candidates = [parent, parent / "images", above, above / "images"]
    if suffix:
        candidates += [above / suffix, above / "images" / suffix]
    return candidates


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not COCO_KEYS <= data.keys():
        raise DatasetFormatError(f"{path}: not a COCO instances file (needs images, annotations, categories)")
    return data


@dataclass(frozen=True)
class _Image:
    file_name: str
    width: float
    height: float


def _entries(annotation: Path, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list under `key`, every entry an object: a hand-edited file fails here with its position, not later."""
    entries = data[key]
    if not isinstance(entries, list):
        raise LabelError(f"{annotation}: '{key}' must be a list, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LabelError(f"{annotation}: {key}[{i}] must be an object, got {type(entry).__name__}")
    return entries


def _field(entry: dict[str, Any], key: str, convert: Callable[[Any], T], where: str) -> T:
    """`entry[key]` converted, or a LabelError `<where>.<key>: ...` instead of a KeyError/TypeError traceback."""
    if key not in entry:
        raise LabelError(f"{where}.{key}: missing")
    try:
        return convert(entry[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelError(f"{where}.{key}: {entry[key]!r} is invalid ({exc})") from None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def _finite(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _positive(value: Any) -> float:
    number = _finite(value)
    if number <= 0:
        raise ValueError("expected a positive number")
    return number


def _bbox(value: Any) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("must be [x, y, width, height]")
    x, y, w, h = (_finite(v) for v in value)
    return x, y, w, h


def _categories(annotation: Path, data: dict[str, Any]) -> list[tuple[int, str]]:
    """(id, name) of every category, in id order. Two ids of one name are a LabelError: they became two classes
    people could not tell apart (two buttons reading the same), each with half the boxes."""
    named = _by_id(annotation, data, "categories", "category",
                   lambda entry, where: class_name(_field(entry, "name", str, where)))
    first: dict[str, int] = {}
    for cid, name in sorted(named.items()):
        if name in first:
            raise LabelError(f"{annotation}: categories {first[name]} and {cid} are both named {name!r}; merge them "
                             "(give their annotations one category_id) or rename one")
        first[name] = cid
    return sorted(named.items())


def _unused_parents(loaded: list[tuple[Path, str | None, dict[str, Any]]]) -> dict[int, str]:
    """{id: name} of the categories that only group others (some category's `supercategory`) and that no
    annotation in any file uses: Roboflow's exports list the project as category 0 that way, and kept, it would be a
    class the model must learn from no box (and, mostly, the class the trainer sees first)."""
    annotation, _, data = loaded[0]
    entries = _entries(annotation, data, "categories")
    parents = {entry.get("supercategory") for entry in entries
               if entry.get("supercategory") != entry.get("name")} - {None, "none", ""}  # COCO's 'person' is its own
    candidates = {cid: name for cid, name in _categories(annotation, data) if name in parents}
    if not candidates or len(candidates) == len(entries):
        return {}
    used = {entry.get("category_id") for file, _, other in loaded for entry in _entries(file, other, "annotations")}
    return {cid: name for cid, name in candidates.items() if cid not in used}


def _images(annotation: Path, data: dict[str, Any]) -> dict[int, _Image]:
    return _by_id(annotation, data, "images", "image",
                  lambda entry, where: _Image(_field(entry, "file_name", _text, where),
                                              _field(entry, "width", _positive, where),
                                              _field(entry, "height", _positive, where)))


def _by_id(annotation: Path, data: dict[str, Any], key: str, kind: str,
           read: Callable[[Any, str], T]) -> dict[int, T]:
    """`data[key]` entries by their `id`, each read by `read(entry, where)`; an id listed twice is a LabelError."""
    found: dict[int, T] = {}
    for i, entry in enumerate(_entries(annotation, data, key)):
        where = f"{annotation}: {key}[{i}]"
        entry_id = _field(entry, "id", int, where)
        if entry_id in found:
            raise LabelError(f"{where}.id: {kind} id {entry_id} is listed twice")
        found[entry_id] = read(entry, where)
    return found


class CocoFormat(DataFormat):
    """a COCO instances JSON (a .json file, or a folder with annotations/instances_*.json) and its images"""

    name = "coco"
    task = "detect"
    priority = 20
    Config = CocoConfig

    def detect(self, path: Path) -> bool:
        files = annotation_files(path)
        return bool(files) and _looks_coco(files[0][0])

    def scan(self, path: Path, config: CocoConfig) -> Catalog:
        files = annotation_files(path)
        if not files:
            raise DatasetFormatError(f"{path}: no COCO instances JSON found")
        root = path if path.is_dir() else path.parent
        loaded = [(annotation, split, _load(annotation)) for annotation, split in files]
        unused_parents = _unused_parents(loaded)
        labels: tuple[str, ...] | None = None
        records: list[Record] = []
        dropped: list[str] = []
        for annotation, split, data in loaded:
            categories = [(cid, name) for cid, name in _categories(annotation, data) if cid not in unused_parents]
            names = tuple(name for _, name in categories)
            if labels is not None and names != labels:
                raise DatasetFormatError(f"{annotation}: categories differ from {files[0][0]}'s")
            labels = names
            found, left_out = self._records(annotation, data, {cid: i for i, (cid, _) in enumerate(categories)},
                                            config, root, split)
            records.extend(found)
            dropped.extend(left_out)
        if not records or labels is None or not labels:
            raise EmptyDatasetError(f"{path}: the COCO file(s) list no images or no categories")
        warnings = tuple(f"{files[0][0]}: category '{name}' (id {cid}) left out: it is the supercategory of the "
                         f"others and no box is of it (Roboflow exports one for the project)"
                         for cid, name in sorted(unused_parents.items()))
        return Catalog(self.name, self.task, labels, tuple(records), str(path), shares=config.shares,
                       dropped=tuple(dropped), warnings=warnings)

    def _records(self, annotation: Path, data: dict[str, Any], index: dict[int, int], config: CocoConfig,
                 root: Path, split: str | None) -> tuple[list[Record], list[str]]:
        """The records of one JSON file, and "where: why" of each annotation left out. An annotation that cannot be
        used costs its image (the first problem named), not the file."""
        images = _images(annotation, data)
        boxes: dict[int, list[list[float]]] = {}
        bad: dict[int, str] = {}
        dropped: list[str] = []
        for i, ann in enumerate(_entries(annotation, data, "annotations")):
            where = f"{annotation}: annotations[{i}]" + (f" (id {ann['id']})" if "id" in ann else "")
            image_id = _image_id(where, ann, images)
            try:
                row = self._box(where, ann, images[image_id], index, config)
            except LabelError as exc:
                bad.setdefault(image_id, str(exc))
                continue
            if isinstance(row, str):
                dropped.append(row)
            else:
                boxes.setdefault(image_id, []).append(row)
        return self._found(annotation, images, boxes, bad, _image_dirs(annotation, config, root), split), dropped

    @staticmethod
    def _box(where: str, ann: dict[str, Any], image: _Image, index: dict[int, int],
             config: CocoConfig) -> list[float] | str:
        """Normalised [x0, y0, x1, y1, class] of one annotation of `image`, "where: why" when it is left out, or a
        LabelError when it cannot be used."""
        category_id = _field(ann, "category_id", int, where)
        if category_id not in index:
            raise LabelError(f"{where}: category_id {category_id} is not in 'categories'")
        if config.skip_crowd and ann.get("iscrowd"):
            return f"{where}: iscrowd, left out (skip_crowd)"
        x, y, w, h = _field(ann, "bbox", _bbox, where)
        width, height, tol = image.width, image.height, config.tolerance
        if w <= 0 or h <= 0:
            return f"{where}: the box {ann['bbox']} has no area, left out"
        box = pixel_box((x, y, x + w, y + h), width, height, tol,
                        lambda: f"{where}: the box {ann['bbox']} reaches outside image {image.file_name} ({width:g} x "
                        f"{height:g})")
        return [*box, index[category_id]]

    @staticmethod
    def _found(annotation: Path, images: dict[int, _Image], boxes: dict[int, list[list[float]]], bad: dict[int, str],
               dirs: list[Path], split: str | None) -> list[Record]:
        records: list[Record] = []
        missing = []
        for image_id, image in images.items():
            found = next((d / image.file_name for d in dirs if (d / image.file_name).is_file()), None)
            if found is None:
                missing.append(image.file_name)
                continue
            size = (image.width, image.height)
            if image_id in bad:
                records.append(BadLabels(found, -1, split, None, size, problem=bad[image_id]))
                continue
            records.append(Record(found, -1, split, np.array(boxes.get(image_id, []), np.float64).reshape(-1, 5),
                                  size))
        if missing:
            raise MissingImageError(f"{annotation}: {len(missing)} image(s) not found (looked in "
                                    f"{', '.join(str(d) for d in dirs)}): {', '.join(missing[:10])}"
                                    + (" ..." if len(missing) > 10 else ""))
        return records


def _image_id(where: str, ann: dict[str, Any], images: dict[int, _Image]) -> int:
    """The image an annotation belongs to; a LabelError when it names none (no image to leave out instead)."""
    image_id = _field(ann, "image_id", int, where)
    if image_id not in images:
        raise LabelError(f"{where}: image_id {image_id} is not in 'images'")
    return image_id


FORMATS.add("coco", CocoFormat())
