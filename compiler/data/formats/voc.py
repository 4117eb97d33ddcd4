"""`voc`: Pascal VOC XML, one file per image (`<filename>`, `<size>`, and an `<object>` per box with its `<name>` and
`<bndbox>` xmin/ymin/xmax/ymax in pixels): what VOC2007/2012, LabelImg, CVAT ("PASCAL VOC 1.1") and Roboflow
("Pascal VOC") write, and the layout many labelling tools still default to.

Layouts (the path is a folder):
- VOC: ROOT/Annotations/*.xml (any case) with the images in ROOT/JPEGImages/ (Kaggle's exports: ROOT/images/; or
  beside the XML). Splits from ROOT/ImageSets/Main/{train,val,test}.txt (one image id per line); `trainval.txt` is
  train where no train.txt is (validation is then carved from it by the reader). When such lists exist, an
  annotated image in none of them is left out, counted in a warning. Class lists (`aeroplane_train.txt`) are not
  split lists and are passed over.
- LabelImg / Roboflow: the XML files beside their images in one folder, or in split folders (`train/`, `valid/`,
  `test/`), the split from the folder's name.

An image is found by the XML's `<filename>` (as a path under the image folder; then its name alone, as tools write
their own machine's path; then without its extension), else by the XML's own stem. Coordinates are VOC's 1-based
pixels, so the box is (xmin - 1, ymin - 1, xmax, ymax) over the `<size>` width and height (when `<size>` is missing
or 0, as some tools write it, the image file's own size). Class names come from `classes.txt` in the folder or the
`classes` option (their order is the model's), else every `<name>` found, sorted. `difficult` objects are kept
(`skip_difficult` leaves them out, reported). A box without area is left out (`dropped`). An XML file that cannot be
parsed (or decoded: a GBK declaration), or an object with a missing or non-numeric field, an unknown class or a box
past the image's edge (beyond `tolerance` pixels), makes its image a `BadLabels` record naming the file and object:
the reader leaves the image out and reports it, or stops, by the unreadable-file policy; so does an image without
`<size>` whose file cannot be read for one. An XML whose image is not found, and another XML file in the folder
(CVAT's annotations.xml), are passed over and named (`ignored`). An image without an XML is not a training image
here (LabelImg writes one only when the image is saved) and is counted in a warning.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from hgen.compiler.data.bad_labels import BadLabels
from hgen.compiler.data.formats import (FORMATS, SPLIT_ALIASES, Catalog, DataFormat, Record, class_name, is_image,
                                        named_some, pixel_box, read_classes_file, visible)
from hgen.compiler.data.formats.folder import check_shares
from hgen.compiler.data.images import read_header
from hgen.compiler.errors import (DatasetFormatError, EmptyDatasetError, ImageTooLargeError, LabelError,
                                  UnreadableImageError)
from hgen.runtime.config import StrictModel

PEEK_BYTES = 4096
# One image's annotation (a thousand objects is ~0.3 MB); a larger file is not one and is not parsed: expat lets an
# entity-laden file grow 100-fold in memory (external entities and "billion laughs" it refuses outright).
MAX_XML_BYTES = 1 << 20
SET_LISTS = {"train": "train", "val": "val", "test": "test"}
NOT_VOC = "not a VOC annotation"  # another XML file in the folder: passed over and named, not an image's labels


class VocConfig(StrictModel):
    classes: tuple[str, ...] | None = Field(None, title="Class names in the model's order (default: classes.txt in "
                                            "the folder, else every object name found, sorted)")
    skip_difficult: bool = Field(False, title="Leave out objects marked <difficult>1</difficult>")
    tolerance: float = Field(1.0, ge=0.0, title="Pixels a box may reach outside its image before it is an error")
    shares: tuple[float, float, float] = Field((0.7, 0.15, 0.15), title="(train, val, test) shares when the layout "
                                               "gives no split")

    validate_shares = field_validator("shares")(check_shares)


@dataclass(frozen=True)
class _Object:
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax as written
    difficult: bool
    where: str


@dataclass(frozen=True)
class _Parsed:
    """One XML file: its image's name and size (None: not written) and objects, or why it cannot be used."""

    xml: Path
    filename: str | None
    size: tuple[float, float] | None
    objects: tuple[_Object, ...]
    problem: str | None = None


def _looks_voc(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(PEEK_BYTES).decode("utf-8", "ignore")
    except OSError:
        return False
    return re.search(r"<annotation[\s>]", head) is not None  # not CVAT's <annotations> file


def _xml_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and visible(p) and p.is_file())


def _child(path: Path, name: str) -> Path | None:
    """`path`'s sub-folder named `name` in any case (Annotations/, annotations/)."""
    return next((c for c in sorted(path.iterdir()) if c.name.lower() == name and c.is_dir()), None)


def _folders(path: Path) -> list[tuple[Path, str | None]]:
    """(folder holding the VOC XML files, its split) of each layout part: an Annotations/ folder (any case) with
    VOC XML in it, the folder itself, or its split folders."""
    if not path.is_dir():
        return []
    annotations = _child(path, "annotations")
    if annotations is not None and _is_voc_folder(annotations):
        return [(annotations, None)]
    if _is_voc_folder(path):
        return [(path, None)]
    return [(child, SPLIT_ALIASES[child.name.lower()]) for child in sorted(path.iterdir())
            if child.is_dir() and child.name.lower() in SPLIT_ALIASES and _is_voc_folder(child)]


def _is_voc_folder(folder: Path) -> bool:
    """Some XML file in it is a VOC annotation (a folder's other XML files, CVAT's annotations.xml, are not)."""
    return any(_looks_voc(p) for p in _xml_files(folder)[:20])


def _text(node: ET.Element, tag: str, where: str) -> str:
    found = node.find(tag)
    if found is None or not (found.text or "").strip():
        raise LabelError(f"{where}: <{tag}> missing")
    return (found.text or "").strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        value = float(text)
    except ValueError:
        raise LabelError(f"{where}: <{tag}> {text!r} is not a number") from None
    if not math.isfinite(value):
        raise LabelError(f"{where}: <{tag}> {text!r} is not a finite number")
    return value


def _size(root: ET.Element, where: str) -> tuple[float, float] | None:
    """The <size> width and height; None when absent or 0 (unknown to the tool that wrote it)."""
    node = root.find("size")
    if node is None:
        return None
    width, height = (_number(node, tag, f"{where} <size>") if node.find(tag) is not None else 0.0
                     for tag in ("width", "height"))
    return (width, height) if width > 0 and height > 0 else None


def _object(node: ET.Element, where: str) -> _Object:
    box_node = node.find("bndbox")
    if box_node is None:
        raise LabelError(f"{where}: <bndbox> missing")
    xmin, ymin, xmax, ymax = (_number(box_node, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
    difficult = node.find("difficult")
    return _Object(class_name(_text(node, "name", where)), (xmin, ymin, xmax, ymax),
                   difficult is not None and (difficult.text or "").strip() == "1", where)


def parse(xml: Path) -> _Parsed:
    """One annotation file; a file that cannot be read or parsed is a `_Parsed` with its problem, not an error."""
    try:
        if xml.stat().st_size > MAX_XML_BYTES:
            return _Parsed(xml, None, None, (), f"{xml}: over {MAX_XML_BYTES >> 20} MiB, not one image's annotation")
        root = ET.fromstring(xml.read_bytes())
    except (OSError, ET.ParseError, ValueError, LookupError) as exc:  # LookupError, ValueError: its encoding
        return _Parsed(xml, None, None, (), f"{xml}: not readable VOC XML ({exc})")
    if root.tag != "annotation":
        return _Parsed(xml, None, None, (), f"{NOT_VOC} (its root element is <{root.tag}>)")
    filename = (root.findtext("filename") or "").strip() or None
    try:
        size = _size(root, str(xml))
        objects = tuple(_object(node, f"{xml}: object {i + 1}") for i, node in enumerate(root.findall("object")))
    except LabelError as exc:
        return _Parsed(xml, filename, None, (), str(exc))
    return _Parsed(xml, filename, size, objects)


class _Images:
    """The image files of the folders an XML's image may be in, looked up by name or stem (listed once: a set of
    ten thousand images is not listed again for each XML)."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = [d for d in dirs if d.is_dir()]
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for folder in self.dirs:
            for file in sorted(folder.iterdir()):
                if is_image(file) and file.is_file():
                    self.by_name.setdefault(file.name, file)
                    self.by_stem.setdefault(file.stem, file)

    def find(self, parsed: _Parsed) -> Path | None:
        """Its <filename> as a path under a folder (`sub/a.jpg`), else its name alone (tools write their own
        machine's path), else its stem (written without the extension), else the XML's own stem."""
        if parsed.filename:
            relative = parsed.filename.replace("\\", "/")
            inside = not relative.startswith("/") and ":" not in relative and ".." not in relative.split("/")
            if inside:  # not another machine's absolute path (/home/..., C:/...), not out of the folder
                found = next((d / relative for d in self.dirs if _is_image_file(d / relative)), None)
                if found is not None:
                    return found
            name = Path(relative).name
            found = self.by_name.get(name) or self.by_stem.get(Path(name).stem) or self.by_stem.get(name)
            if found is not None:
                return found
        return self.by_stem.get(parsed.xml.stem)


def _is_image_file(path: Path) -> bool:
    """An image file at `path`; False for a name the system cannot even look up (over 255 bytes)."""
    try:
        return is_image(path) and path.is_file()
    except OSError:
        return False


def _split_lists(root: Path) -> dict[str, str] | None:
    """{image id: split} from ImageSets/Main's train/val/test (trainval as train when no train.txt), or None."""
    main = root / "ImageSets" / "Main"
    lists = {name: main / f"{name}.txt" for name in ("train", "val", "trainval", "test")}
    present = {name: path for name, path in lists.items() if path.is_file()}
    if not present:
        return None
    if "train" in present:
        present.pop("trainval", None)
    found: dict[str, str] = {}
    for name, path in present.items():
        split = "train" if name == "trainval" else SET_LISTS[name]
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetFormatError(f"{path}: cannot read the split list as UTF-8 text ({exc})") from None
        for line in text.splitlines():
            image_id = line.split()[0] if line.split() else ""
            if image_id:
                found.setdefault(image_id, split)
    return found


class VocFormat(DataFormat):
    """Pascal VOC XML files (Annotations/ + JPEGImages/, or XML beside the images, as LabelImg and CVAT write)"""

    name = "voc"
    task = "detect"
    priority = 25
    Config = VocConfig

    def detect(self, path: Path) -> bool:
        return bool(_folders(path))

    def scan(self, path: Path, config: VocConfig) -> Catalog:
        if not (folders := _folders(path)):
            raise DatasetFormatError(f"{path}: no VOC XML files (Annotations/*.xml, or *.xml beside the images)")
        parsed = [(p, split, folder) for folder, split in folders for p in map(parse, _xml_files(folder))]
        ignored = [f"{p.xml}: {p.problem}" for p, _, _ in parsed if p.problem and p.problem.startswith(NOT_VOC)]
        parsed = [(p, split, folder) for p, split, folder in parsed if not (p.problem or "").startswith(NOT_VOC)]
        labels = self._labels(path, config, [p for p, _, _ in parsed])
        index = {name: i for i, name in enumerate(labels)}
        lists = _split_lists(path)
        images = {folder: _Images(self._image_dirs(path, folder)) for folder, _ in folders}
        records: list[Record] = []
        dropped: list[str] = []
        unlisted = 0
        for item, split, folder in parsed:
            if lists is not None and item.xml.stem not in lists:
                unlisted += 1
                continue
            image = images[folder].find(item)
            if image is None:
                looked = ", ".join(str(d) for d in images[folder].dirs)
                ignored.append(f"{item.xml}: its image {item.filename or item.xml.stem!r} is not in {looked}")
                continue
            split = lists[item.xml.stem] if lists is not None else split
            record, left_out = self._record(item, image, split, index, config)
            records.append(record)
            dropped.extend(left_out)
        if not records:
            raise EmptyDatasetError(f"{path}: the VOC XML files describe no image found on disk"
                                    + (f" ({named_some(ignored)})" if ignored else ""))
        return Catalog(self.name, self.task, labels, tuple(records), str(path), ignored=tuple(ignored),
                       shares=config.shares, dropped=tuple(dropped),
                       warnings=self._warnings(path, images.values(), records, unlisted, lists is not None))

    @staticmethod
    def _labels(path: Path, config: VocConfig, parsed: list[_Parsed]) -> tuple[str, ...]:
        if config.classes:
            return tuple(class_name(name) for name in config.classes)
        listed = read_classes_file(path / "classes.txt")
        if listed is not None:
            return listed
        found = sorted({obj.name for item in parsed for obj in item.objects})
        if not found:
            raise EmptyDatasetError(f"{path}: the VOC XML files hold no <object>: nothing to learn to detect")
        return tuple(found)

    @staticmethod
    def _image_dirs(root: Path, folder: Path) -> list[Path]:
        """Where an Annotations/ folder's images are: JPEGImages/ (VOC), images/ (Kaggle's layout), beside it."""
        if folder.parent != root or folder.name.lower() != "annotations":
            return [folder]
        return [d for d in (_child(root, "jpegimages"), _child(root, "images")) if d is not None] + [folder, root]

    @staticmethod
    def _record(item: _Parsed, image: Path, split: str | None, index: dict[str, int],
                config: VocConfig) -> tuple[Record, list[str]]:
        """The image's record with its normalised boxes, and "where: why" of each object left out; a `BadLabels`
        record when one object cannot be used."""
        if item.problem is not None:
            return BadLabels(image, -1, split, None, None, problem=item.problem), []
        try:
            size = item.size or tuple(map(float, read_header(image).upright()))  # as shown (EXIF turns it)
        except (UnreadableImageError, ImageTooLargeError) as exc:
            return BadLabels(image, -1, split, None, None, problem=f"{item.xml}: no <size>, and its image "
                             f"{image} cannot be read for one ({exc})"), []
        rows: list[list[float]] = []
        dropped: list[str] = []
        try:
            for obj in item.objects:
                row = _row(obj, size, index, config)
                if isinstance(row, str):
                    dropped.append(row)
                else:
                    rows.append(row)
        except LabelError as exc:
            return BadLabels(image, -1, split, None, size, problem=str(exc)), []
        return Record(image, -1, split, np.array(rows, np.float64).reshape(-1, 5), size), dropped

    @staticmethod
    def _warnings(path: Path, images: Iterable[_Images], records: list[Record], unlisted: int,
                  listed: bool) -> tuple[str, ...]:
        warnings = []
        if unlisted:
            warnings.append(f"{path}: {unlisted} annotated image(s) are in no ImageSets/Main list "
                            "(train/val/trainval/test.txt) and are left out")
        used = {r.path for r in records}
        unlabelled = sorted({p for found in images for p in found.by_name.values()} - used)
        if unlabelled and not listed:
            warnings.append(f"{path}: {len(unlabelled)} image(s) have no XML file and are not used (label them, "
                            f"or save them empty in the labelling tool to train them as background), e.g. "
                            f"{unlabelled[0].name}")
        return tuple(warnings)


def _row(obj: _Object, size: tuple[float, float], index: dict[str, int], config: VocConfig) -> list[float] | str:
    """Normalised [x0, y0, x1, y1, class] of one object, "where: why" when it is left out, or a LabelError."""
    if obj.name not in index:
        raise LabelError(f"{obj.where}: class {obj.name!r} is not one of the classes ({named_some(list(index), 5)})")
    if config.skip_difficult and obj.difficult:
        return f"{obj.where}: difficult, left out (skip_difficult)"
    xmin, ymin, xmax, ymax = obj.box
    x0, y0, x1, y1 = xmin - 1.0, ymin - 1.0, xmax, ymax
    if x1 <= x0 or y1 <= y0:
        return f"{obj.where}: the box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) has no area, left out"
    width, height = size
    box = pixel_box((x0, y0, x1, y1), width, height, config.tolerance,
                    lambda: f"{obj.where}: the box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) reaches outside the "
                    f"{width:g} x {height:g} image")
    return [*box, float(index[obj.name])]


FORMATS.add("voc", VocFormat())
