"""`yolo`: the Ultralytics layout: `data.yaml` (names, train/val/test), images/<split>/*, labels/<split>/*.txt.

Each label line is `class cx cy w h`, normalised to [0, 1] (a polygon `class x1 y1 x2 y2 ...` counts as its bounding
box). An image without a label file has no objects. A class index outside `names`, a box reaching outside the image
(beyond `tolerance`), or a malformed line is a LabelError naming the label file and line. `train`/`val`/`test` may be
a folder, a .txt list of image paths, or a list of those, relative to `path:` (itself relative to the YAML's folder)
or to the YAML's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from hgen.compiler.data.formats import FORMATS, SPLITS, Catalog, DataFormat, Record, is_image, visible
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError, LabelError, MissingImageError
from hgen.runtime.config import StrictModel

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


class YoloConfig(StrictModel):
    yaml_file: str | None = Field(None, title="The data YAML inside the folder (default: data.yaml, dataset.yaml)")
    tolerance: float = Field(1e-3, ge=0.0, le=0.1, title="How far (normalised) a box may reach outside the image "
                             "before it is an error; within it, boxes are clipped")


def _load_yaml(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def yaml_in(path: Path, config: YoloConfig | None = None) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    if not path.is_dir():
        return None
    names = (config.yaml_file,) if config and config.yaml_file else YAML_NAMES
    return next((path / n for n in names if (path / n).is_file()), None)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last /images/ becomes /labels/, the suffix .txt (else a .txt beside the image)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _names(data: dict[str, Any], where: Path) -> tuple[str, ...]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{where}: 'names' keys must be class indices 0..n-1") from None
        if keys != list(range(len(keys))):
            raise DatasetFormatError(f"{where}: 'names' keys must be 0..{len(keys) - 1} without gaps")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names:
        raise DatasetFormatError(f"{where}: 'names' must list the class names")
    if "nc" in data and data["nc"] != len(names):
        raise DatasetFormatError(f"{where}: nc is {data['nc']} but 'names' has {len(names)} entries")
    return tuple(str(n) for n in names)


def _images_of(entry: Any, root: Path, where: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        target = (root / str(item)).expanduser()
        if target.is_dir():
            images.extend(sorted(p for p in target.rglob("*") if p.is_file() and is_image(p)
                                 and all(visible(Path(s)) for s in p.relative_to(target).parts)))
        elif target.is_file() and target.suffix == ".txt":
            listed = [line.strip() for line in target.read_text().splitlines() if line.strip()]
            images.extend((target.parent / line).resolve() if line.startswith(".") else root / line
                          for line in listed)
            missing = [str(p) for p in images if not p.is_file()]
            if missing:
                raise MissingImageError(f"{target}: lists {len(missing)} missing image(s): {', '.join(missing[:10])}")
        else:
            raise MissingImageError(f"{where}: split path '{item}' does not exist (looked for {target})")
    return images


def parse_label_file(path: Path, num_classes: int, tolerance: float) -> np.ndarray:
    """[k, 5] (x0, y0, x1, y1, class) from a YOLO label file; LabelError names the file and line."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise LabelError(f"{where}: not numbers: '{line.strip()}'") from None
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise LabelError(f"{where}: class {fields[0]} is out of range (data.yaml names {num_classes} classes, "
                             f"0..{num_classes - 1})")
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(values) >= 7 and len(values) % 2 == 1:
            xs, ys = values[1::2], values[2::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            raise LabelError(f"{where}: expected 'class cx cy w h' (5 values), got {len(values)}")
        if not box[0] < box[2] or not box[1] < box[3]:
            raise LabelError(f"{where}: the box has no area: '{line.strip()}'")
        if min(box) < -tolerance or max(box) > 1 + tolerance:
            raise LabelError(f"{where}: the box ({', '.join(f'{v:.3f}' for v in box)}) reaches outside the image; "
                             f"YOLO coordinates are normalised to [0, 1]")
        rows.append([*np.clip(box, 0.0, 1.0), int(cls)])
    return np.array(rows, np.float64).reshape(-1, 5)


class YoloFormat(DataFormat):
    """an Ultralytics YOLO data set (data.yaml with names and train/val/test; images/ and labels/)"""

    name = "yolo"
    task = "detect"
    priority = 10
    Config = YoloConfig

    def detect(self, path: Path) -> bool:
        found = yaml_in(path)
        data = _load_yaml(found) if found else None
        return bool(data) and "names" in data and "train" in data  # type: ignore[operator]

    def scan(self, path: Path, config: YoloConfig) -> Catalog:
        where = yaml_in(path, config)
        data = _load_yaml(where) if where else None
        if where is None or data is None:
            raise DatasetFormatError(f"{path}: no readable data.yaml (names, train, val)")
        labels = _names(data, where)
        root = where.parent / str(data["path"]) if data.get("path") else where.parent
        records: list[Record] = []
        seen: set[Path] = set()
        for split in SPLITS:
            entry = data.get(split)
            if not entry:
                continue
            for image in _images_of(entry, root, where):
                if image in seen:
                    continue
                seen.add(image)
                txt = label_path(image)
                boxes = parse_label_file(txt, len(labels), config.tolerance) if txt.is_file() else np.zeros((0, 5))
                records.append(Record(image, -1, split, boxes))
        if not records:
            raise EmptyDatasetError(f"{where}: the train/val/test paths hold no images")
        if not any(r.split == "train" for r in records):
            raise EmptyDatasetError(f"{where}: the train split holds no images")
        return Catalog(self.name, self.task, labels, tuple(records), str(where))


FORMATS.add("yolo", YoloFormat())
