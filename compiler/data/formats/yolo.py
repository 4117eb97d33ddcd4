"""`yolo`: the Ultralytics layout: `data.yaml` (names, train/val/test), images/<split>/*, labels/<split>/*.txt.

Each label line is `class cx cy w h`, normalised to [0, 1] (a polygon `class x1 y1 x2 y2 ...` counts as its bounding
box; with `kpt_shape` in the YAML, a pose line's keypoints after its box are passed over). An image without a label
file has no objects; a label file without an image is reported (`ignored`; not the label of an image a .txt split
list leaves out); a box without area is left out and reported (`dropped`); a box past the image's edge is clipped.
A label file that cannot be read, or holds a line with a class index outside `names`, a centre, size or point
outside [0, 1] (beyond `tolerance`), or that is malformed, makes its image a `BadLabels` record naming the file and
line: the reader leaves the image out and reports it, or stops with a LabelError, by the unreadable-file policy
(`hgen.compiler.data.bad_labels`, which says why the whole image is left out and not only the line).
When no image has a box (its label files were never found, or hold none) the set is an EmptyDatasetError naming
where they were looked for; images without a label file, when others have one, are counted in a warning. A data.yaml
that is not valid YAML is a DatasetFormatError naming its line and column.
`names` is a list or a {index: name} mapping (only `nc: N`: the classes are named class_0..class_N-1, as
Ultralytics names them); each name is the text written (`no` stays `no`, not YAML's False); blank or repeated
names are refused. `train`/`val`/`test` may be a folder, a .txt list of image paths, or a
list of those, relative to `path:` (itself relative to the YAML's folder; the YAML's folder when it names no folder
there) or to the YAML's folder; Roboflow's `../train/images` is read as `train/images`, as Ultralytics does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import Field

from hgen.compiler.data.bad_labels import BadLabels, label_problem
from hgen.compiler.data.formats import (FORMATS, SPLITS, Catalog, DataFormat, Record, class_name, is_image, named_some,
                                        visible, walk)
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError, LabelError, MissingImageError
from hgen.runtime.config import StrictModel

YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
ROUNDING = 1e-9  # cx + w / 2 in floating point: 0.5 + 0.55 is 1.0500000000000000444


class YoloConfig(StrictModel):
    yaml_file: str | None = Field(None, title="The data YAML inside the folder (default: data.yaml, dataset.yaml)")
    tolerance: float = Field(0.02, ge=0.0, le=0.5, title="How far outside [0, 1] a label's centre, size or polygon "
                             "point may be before it is an error (Ultralytics: 0); boxes past the image's edge are "
                             "clipped to it")


def read_yaml(path: Path) -> Any:
    """The YAML's content (UTF-8, a byte-order mark allowed, as every other file hgen reads); DatasetFormatError
    naming the line and column of a syntax error, so a broken data.yaml is not taken for another format."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        lines = text.splitlines()
        line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
        hint = " (YAML indents with spaces, not tabs)" if "\t" in line else ""
        raise DatasetFormatError(f"{where}: not valid YAML: {problem}; fix that line{hint}") from None


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
    names = _as_written(data.get("names"), where)
    if names is None and isinstance(data.get("nc"), int) and not isinstance(data["nc"], bool) and data["nc"] > 0:
        names = [f"class_{i}" for i in range(data["nc"])]  # as Ultralytics names them when data.yaml gives only nc
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
    labels = tuple(class_name(str(n)) for n in names)
    blank = [i for i, name in enumerate(labels) if not name.strip()]
    if blank:
        raise DatasetFormatError(f"{where}: class {blank[0]} of 'names' has no name; name every class")
    twice = sorted({name for name in labels if labels.count(name) > 1})
    if twice:  # people pick a class by its name: two buttons of one name cannot be told apart
        raise DatasetFormatError(f"{where}: 'names' lists {', '.join(map(repr, twice))} more than once")
    return labels


def _as_written(names: Any, where: Path) -> Any:
    """`names` with each entry YAML read as another type (`no`, `NO`, `off` -> False; `007` -> 7; `null`) taken as
    the text the file holds: people answered in classes named "False" and "True", and Norway's `NO` became the same
    class name as `no`."""
    entries = names.values() if isinstance(names, dict) else names if isinstance(names, list) else ()
    if all(isinstance(n, str) for n in entries):
        return names
    node = _names_node(where)
    if isinstance(names, list) and isinstance(node, yaml.SequenceNode) and len(node.value) == len(names):
        return [_text(n, item) for n, item in zip(names, node.value, strict=True)]
    if isinstance(names, dict) and isinstance(node, yaml.MappingNode) and len(node.value) == len(names):
        return {k: _text(n, item) for (k, n), (_, item) in zip(names.items(), node.value, strict=True)}
    return names


def _text(parsed: Any, node: yaml.Node) -> Any:
    scalar = isinstance(node, yaml.ScalarNode) and isinstance(parsed, bool | int | float | None)
    return node.value if scalar else parsed


def _names_node(where: Path) -> yaml.Node | None:
    """The YAML node of the top-level `names:` (the last one, as the loader keeps it)."""
    root = yaml.compose(where.read_text(encoding="utf-8-sig"), Loader=yaml.SafeLoader)
    found = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "names":
                found = value
    return found


def _root(data: dict[str, Any], where: Path) -> Path:
    """The folder split paths are relative to: `path:` (relative to the YAML's folder), or the YAML's folder when
    `path:` is absent or names a folder that is not there (a YAML written on its author's machine, or Ultralytics'
    `path: ../datasets/NAME` copied along with the data set)."""
    if not data.get("path"):
        return where.parent
    declared = (where.parent / str(data["path"])).expanduser()
    return declared if declared.is_dir() else where.parent


def _split_target(root: Path, item: str) -> Path:
    """A split path; Roboflow's exports say `../train/images` from a YAML that sits beside `train/`, which Ultralytics
    reads as `train/images`, and so does this."""
    target = (root / item).expanduser()
    if not target.exists() and item.startswith("../"):
        beside = (root / item[3:]).expanduser()
        return beside if beside.exists() else target
    return target


def _folder_images(folder: Path) -> list[Path]:
    """Visible image files under `folder` (linked folders followed), broken links included (the reader reports them
    as unreadable)."""
    return [p for p in walk(folder)[0] if is_image(p) and (p.is_file() or not p.exists())]


def _images_of(entry: Any, root: Path, where: Path, absent: list[str] | None = None) -> list[Path]:
    """The images a split entry names; a path that does not exist is an error, or noted in `absent` if given (the
    test split: Ultralytics reads a data set without it, and Roboflow's exports name one they may not hold)."""
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        target = _split_target(root, str(item))
        if absent is not None and not target.exists():
            absent.append(f"{where}: split path '{item}' does not exist (looked for {target}); left out")
        elif target.is_dir():
            images.extend(_folder_images(target))
        elif target.is_file() and target.suffix == ".txt":
            try:
                listed = [line.strip() for line in target.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetFormatError(f"{target}: not a readable list of image paths ({exc})") from None
            images.extend((target.parent / line).resolve() if line.startswith(".") else root / line
                          for line in listed)
            missing = [str(p) for p in images if not p.is_file()]
            if missing:
                raise MissingImageError(f"{target}: lists {len(missing)} missing image(s): {', '.join(missing[:10])}")
        else:
            raise MissingImageError(f"{where}: split path '{item}' does not exist (looked for {target})")
    return images


def _box(values: list[float], keypoints: bool) -> list[float]:
    """(x0, y0, x1, y1) of a label line's numbers after the class: a box, a polygon's bounds, or a pose line's box."""
    if len(values) == 4 or (keypoints and len(values) > 4):
        cx, cy, w, h = values[:4]
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    xs, ys = values[0::2], values[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def _line_values(fields: list[str], where: str, num_classes: int, keypoints: bool) -> tuple[int, list[float]]:
    """The class index and the numbers of one label line, or a LabelError saying what is wrong with it."""
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise LabelError(f"{where}: not numbers: '{' '.join(fields)}'") from None
    if not all(math.isfinite(v) for v in values):
        raise LabelError(f"{where}: not finite numbers: '{' '.join(fields)}'")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
        raise LabelError(f"{where}: class {fields[0]} is out of range (data.yaml names {num_classes} classes, "
                         f"0..{num_classes - 1})")
    if not (len(values) == 5 or (len(values) >= 7 and len(values) % 2 == 1) or (keypoints and len(values) > 5)):
        raise LabelError(f"{where}: expected 'class cx cy w h' (5 values) or a polygon 'class x1 y1 x2 y2 x3 y3 ...', "
                         f"got {len(values)} values")
    return int(cls), values[1:]


def parse_label_file(path: Path, num_classes: int, tolerance: float, keypoints: bool = False
                     ) -> tuple[np.ndarray, tuple[str, ...]]:
    """[k, 5] (x0, y0, x1, y1, class) from a YOLO label file, and "file:line: why" of each box left out.

    As Ultralytics checks: the centre and size (or a polygon's points) must be in [0, 1], here within `tolerance`;
    a box reaching past the image's edge (an object the frame cuts) is clipped to it. A value further out (pixel
    coordinates, or normalised by the wrong size) is a LabelError, as is a malformed line or an unreadable file,
    naming the file and line (the scan makes the image a `BadLabels` record of it). A box without area (zero width
    or height) is left out and reported: one empty box does not cost its image.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: not a readable label file ({exc})") from None
    rows, dropped = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        cls, values = _line_values(fields, where, num_classes, keypoints)
        raw = values[:4] if len(values) == 4 or keypoints else values  # a pose line's visibility flags are 0..2
        if min(raw) < -tolerance - ROUNDING or max(raw) > 1 + tolerance + ROUNDING:
            reach = math.ceil(max(-min(raw), max(raw) - 1) * 100 - ROUNDING) / 100
            hint = f"; a spec ?tolerance={reach:g} would accept it" if reach <= 0.5 else ""
            raise LabelError(f"{where}: values outside [0, 1] ('{line.strip()}'); YOLO centres, sizes and polygon "
                             f"points are normalised by the image's size, not pixels (tolerance {tolerance:g}{hint})")
        box = _box(values, keypoints)
        box = list(np.clip(box, 0.0, 1.0))
        if not box[0] < box[2] or not box[1] < box[3]:
            dropped.append(f"{where}: the box has no area ('{line.strip()}'), left out")
            continue
        rows.append([*box, cls])
    return np.array(rows, np.float64).reshape(-1, 5), tuple(dropped)


class YoloFormat(DataFormat):
    """an Ultralytics YOLO data set (data.yaml with names and train/val/test; images/ and labels/)"""

    name = "yolo"
    task = "detect"
    priority = 10
    Config = YoloConfig

    def detect(self, path: Path) -> bool:
        found = yaml_in(path)
        if found is None:
            return False
        try:
            data = read_yaml(found)
        except DatasetFormatError:
            return True  # a data.yaml that does not parse is still meant as one: scan names the line
        return isinstance(data, dict) and ("names" in data or "nc" in data)  # no `train:`: scan says so

    def scan(self, path: Path, config: YoloConfig) -> Catalog:
        where = yaml_in(path, config)
        if where is None:
            raise DatasetFormatError(f"{path}: no data.yaml (names, train, val)")
        data = read_yaml(where)
        if not isinstance(data, dict):
            raise DatasetFormatError(f"{where}: not a mapping of keys (names, train, val)")
        if not data.get("train"):
            raise DatasetFormatError(f"{where}: no `train:` key (the training images: a folder, a .txt list of image "
                                     "paths, or a list of either, as Ultralytics reads it)")
        labels = _names(data, where)
        root = _root(data, where)
        keypoints = "kpt_shape" in data  # a pose set: each line is a box followed by its keypoints
        records: list[Record] = []
        dropped: list[str] = []
        absent: list[str] = []
        unlabelled: list[Path] = []  # images without a label file
        seen: set[Path] = set()
        for split in SPLITS:
            entry = data.get(split)
            if not entry:
                continue
            for image in _images_of(entry, root, where, absent if split == "test" else None):
                if image in seen:
                    continue
                seen.add(image)
                txt = label_path(image)
                if txt.is_file():
                    try:
                        boxes, left_out = parse_label_file(txt, len(labels), config.tolerance, keypoints)
                    except LabelError as exc:  # the image, not the set: the reader applies the policy
                        records.append(BadLabels(image, -1, split, problem=str(exc)))
                        continue
                else:
                    boxes, left_out = np.zeros((0, 5)), ()
                    unlabelled.append(image)
                dropped.extend(left_out)
                records.append(Record(image, -1, split, boxes))
        if not records:
            raise EmptyDatasetError(f"{where}: the train/val/test paths hold no images")
        if not any(r.split == "train" for r in records):
            raise EmptyDatasetError(f"{where}: the train split holds no images")
        return Catalog(self.name, self.task, labels, tuple(records), str(where), (*absent, *_orphan_labels(records)),
                       dropped=tuple(dropped), warnings=_label_coverage(where, records, unlabelled))


def _label_folders(images: list[Path]) -> str:
    """Where the label files of `images` were looked for (at most three folders named)."""
    return named_some(sorted({label_path(p).parent for p in images}))


def _label_coverage(where: Path, records: list[Record], unlabelled: list[Path]) -> tuple[str, ...]:
    """EmptyDatasetError when no image has a box (a misnamed labels folder trains a detector on nothing and
    reports mAP nan); else a warning counting the images without a label file, which train as background. Label
    files that cannot be used are not "no box": the reader's policy names them (all in pixels is a LabelError)."""
    if not any(r.boxes is not None and len(r.boxes) for r in records) and \
            not any(label_problem(r) is not None for r in records):
        missing = set(unlabelled)
        if len(unlabelled) == len(records):
            raise EmptyDatasetError(
                f"{where}: none of the {len(records)} images has a label file (looked for NAME.txt in "
                f"{_label_folders(unlabelled)}, where Ultralytics reads them: the image's path with its last images/ "
                "folder as labels/); put the label files there, or rename their folder to labels/")
        raise EmptyDatasetError(f"{where}: the label files hold no boxes (every image is background); a detector "
                                "needs labelled objects: check the label files, e.g. "
                                f"{label_path(next(r.path for r in records if r.path not in missing))}")
    if not unlabelled:
        return ()
    return (f"{len(unlabelled)} of {len(records)} images have no label file (looked in "
            f"{_label_folders(unlabelled)}) and train as background (no objects), e.g. {unlabelled[0].name}",)


def _orphan_labels(records: list[Record]) -> tuple[str, ...]:
    """Label files beside the used ones whose image is not there (renamed or deleted): their boxes train nothing.

    Only a label without an image of its stem in the matching images folder is named: when a split is a .txt list,
    the labels of the images it leaves out are the list's choice, not a broken data set, and go unremarked."""
    used = {label_path(r.path) for r in records}
    sources: dict[Path, set[Path]] = {}  # labels folder -> the images folders whose labels it holds
    for r in records:
        sources.setdefault(label_path(r.path).parent, set()).add(r.path.parent)
    beside = {r.path.parent for r in records}  # .txt files among the images are lists or notes, not labels
    orphans: list[Path] = []
    for folder, image_folders in sources.items():
        if folder in beside or not folder.is_dir():
            continue
        stems = {p.stem for images in image_folders for p in images.iterdir() if is_image(p)}
        orphans += [txt for txt in folder.glob("*.txt") if txt not in used and txt.stem not in stems
                    and txt.name != "classes.txt" and visible(txt)]
    return tuple(f"{txt}: a label file without an image" for txt in sorted(orphans))


FORMATS.add("yolo", YoloFormat())
