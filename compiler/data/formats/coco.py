"""`coco`: COCO instances JSON (images, annotations with `bbox` [x, y, w, h] in pixels, categories) + image folder.

The path is a JSON file, or a folder holding `annotations/instances_<split>*.json` (split from the file name:
train/val/test) or a single `*.json` with COCO keys (e.g. Roboflow's `_annotations.coco.json`). Images are looked
up under `images_dir` if given, else beside the JSON, in `images/`, in a folder named like the JSON's split
(`train2017/`), and in the folder above `annotations/`. Segmentation is ignored; `iscrowd` boxes are kept unless
`skip_crowd`. Categories keep their ids' order. An image listed but missing on disk is a MissingImageError (listing
them); an annotation whose category is unknown or whose box leaves the image is a LabelError.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from hgen.compiler.data.formats import FORMATS, Catalog, DataFormat, Record
from hgen.compiler.data.formats.folder import check_shares
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError, LabelError, MissingImageError
from hgen.runtime.config import StrictModel

COCO_KEYS = {"images", "annotations", "categories"}
PEEK_BYTES = 1 << 16


class CocoConfig(StrictModel):
    images_dir: str | None = Field(None, title="Folder the JSON's file_name entries are relative to (default: "
                                   "found next to the JSON)")
    skip_crowd: bool = Field(False, title="Drop annotations with iscrowd = 1")
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


def annotation_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() == ".json" else []
    if not path.is_dir():
        return []
    inside = sorted((path / "annotations").glob("instances*.json")) if (path / "annotations").is_dir() else []
    if inside:
        return inside
    return [p for p in sorted(path.glob("*.json")) if _looks_coco(p)][:1]


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
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not COCO_KEYS <= data.keys():
        raise DatasetFormatError(f"{path}: not a COCO instances file (needs images, annotations, categories)")
    return data


class CocoFormat(DataFormat):
    """a COCO instances JSON (a .json file, or a folder with annotations/instances_*.json) and its images"""

    name = "coco"
    task = "detect"
    priority = 20
    Config = CocoConfig

    def detect(self, path: Path) -> bool:
        files = annotation_files(path)
        return bool(files) and _looks_coco(files[0])

    def scan(self, path: Path, config: CocoConfig) -> Catalog:
        files = annotation_files(path)
        if not files:
            raise DatasetFormatError(f"{path}: no COCO instances JSON found")
        root = path if path.is_dir() else path.parent
        labels: tuple[str, ...] | None = None
        records: list[Record] = []
        for annotation in files:
            data = _load(annotation)
            categories = sorted(data["categories"], key=lambda c: c["id"])
            names = tuple(str(c["name"]) for c in categories)
            if labels is not None and names != labels:
                raise DatasetFormatError(f"{annotation}: categories differ from {files[0].name}'s")
            labels = names
            records.extend(self._records(annotation, data, {c["id"]: i for i, c in enumerate(categories)}, config,
                                         root, _split_of(annotation) if len(files) > 1 else None))
        if not records or labels is None or not labels:
            raise EmptyDatasetError(f"{path}: the COCO file(s) list no images or no categories")
        return Catalog(self.name, self.task, labels, tuple(records), str(path), shares=config.shares)

    def _records(self, annotation: Path, data: dict[str, Any], index: dict[int, int], config: CocoConfig,
                 root: Path, split: str | None) -> list[Record]:
        dirs = _image_dirs(annotation, config, root)
        boxes: dict[int, list[list[float]]] = {}
        images = {int(im["id"]): im for im in data["images"]}
        for ann in data["annotations"]:
            where = f"{annotation}: annotation {ann.get('id', '?')}"
            image = images.get(int(ann.get("image_id", -1)))
            if image is None:
                raise LabelError(f"{where}: image_id {ann.get('image_id')} is not in 'images'")
            if ann.get("category_id") not in index:
                raise LabelError(f"{where}: category_id {ann.get('category_id')} is not in 'categories'")
            if config.skip_crowd and ann.get("iscrowd"):
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise LabelError(f"{where}: bbox must be [x, y, width, height]")
            x, y, w, h = (float(v) for v in bbox)
            width, height = float(image["width"]), float(image["height"])
            tol = config.tolerance
            if w <= 0 or h <= 0:
                raise LabelError(f"{where}: the box {bbox} has no area")
            if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
                raise LabelError(f"{where}: the box {bbox} reaches outside image {image['file_name']} "
                                 f"({width:g} x {height:g})")
            box = np.clip([x / width, y / height, (x + w) / width, (y + h) / height], 0.0, 1.0)
            boxes.setdefault(int(image["id"]), []).append([*box, index[ann["category_id"]]])
        records, missing = [], []
        for image_id, image in images.items():
            found = next((d / image["file_name"] for d in dirs if (d / image["file_name"]).is_file()), None)
            if found is None:
                missing.append(str(image["file_name"]))
                continue
            records.append(Record(found, -1, split, np.array(boxes.get(image_id, []), np.float64).reshape(-1, 5)))
        if missing:
            raise MissingImageError(f"{annotation}: {len(missing)} image(s) not found (looked in "
                                    f"{', '.join(str(d) for d in dirs)}): {', '.join(missing[:10])}"
                                    + (" ..." if len(missing) > 10 else ""))
        return records


FORMATS.add("coco", CocoFormat())
