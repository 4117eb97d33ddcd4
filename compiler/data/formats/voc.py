"""`voc`: Pascal VOC XML, one file per image (`<filename>`, `<size>`, and an `<object>` per box with its `<name>` and
`<bndbox>` xmin/ymin/xmax/ymax in pixels): what VOC2007/2012, LabelImg, CVAT ("PASCAL VOC 1.1") and Roboflow
("Pascal VOC") write, and the layout many labelling tools still default to.

Layouts (the path is a folder):
- VOC: ROOT/Annotations/*.xml with the images in ROOT/JPEGImages/ (or beside the XML). Splits from
  ROOT/ImageSets/Main/{train,val,test}.txt (one image id per line); `trainval.txt` is train where no train.txt is
  (validation is then carved from it by the reader). When such lists exist, an annotated image in none of them is
  left out, counted in a warning. Class lists (`aeroplane_train.txt`) are not split lists and are passed over.
- LabelImg / Roboflow: the XML files beside their images in one folder, or in split folders (`train/`, `valid/`,
  `test/`), the split from the folder's name.

An image is found by the XML's `<filename>`, else by the XML's own stem with an image extension. Coordinates are
VOC's 1-based pixels, so the box is (xmin - 1, ymin - 1, xmax, ymax) over the `<size>` width and height (when
`<size>` is missing or 0, as some tools write it, the image file's own size). Class names come from `classes.txt` in
the folder or the `classes` option (their order is the model's), else every `<name>` found, sorted. `difficult`
objects are kept (`skip_difficult` leaves them out, reported). A box without area is left out (`dropped`). An XML
file that cannot be parsed, or an object with a missing or non-numeric field, an unknown class or a box past the
image's edge (beyond `tolerance` pixels), makes its image a `BadLabels` record naming the file and object: the
reader leaves the image out and reports it, or stops, by the unreadable-file policy. An XML whose image is missing
is a MissingImageError listing them. An image without an XML is not a training image here (LabelImg writes one only
when the image is saved) and is counted in a warning.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from hgen.compiler.data.bad_labels import BadLabels
from hgen.compiler.data.formats import (FORMATS, SPLIT_ALIASES, Catalog, DataFormat, Record, class_name, is_image,
                                        named_some, read_classes_file, visible)
from hgen.compiler.data.formats.folder import check_shares
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError, LabelError, MissingImageError
from hgen.runtime.config import StrictModel

PEEK_BYTES = 4096
MAX_XML_BYTES = 4 << 20  # one image's annotation; a larger file is not one (and is not parsed)
SET_LISTS = {"train": "train", "val": "val", "test": "test"}


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
    return "<annotation" in head


def _xml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.xml") if visible(p) and p.is_file()) if folder.is_dir() else []


def _folders(path: Path) -> list[tuple[Path, str | None]]:
    """(folder holding the XML files, its split) of each layout part."""
    if (path / "Annotations").is_dir():
        return [(path / "Annotations", None)]
    if _xml_files(path):
        return [(path, None)]
    return [(child, SPLIT_ALIASES[child.name.lower()]) for child in sorted(path.iterdir())
            if child.is_dir() and child.name.lower() in SPLIT_ALIASES and _xml_files(child)]


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
    except (OSError, ET.ParseError) as exc:
        return _Parsed(xml, None, None, (), f"{xml}: not readable VOC XML ({exc})")
    if root.tag != "annotation":
        return _Parsed(xml, None, None, (), f"{xml}: the root element is <{root.tag}>, not <annotation>")
    filename = (root.findtext("filename") or "").strip() or None
    try:
        size = _size(root, str(xml))
        objects = tuple(_object(node, f"{xml}: object {i + 1}") for i, node in enumerate(root.findall("object")))
    except LabelError as exc:
        return _Parsed(xml, filename, None, (), str(exc))
    return _Parsed(xml, filename, size, objects)


def _image_of(parsed: _Parsed, dirs: list[Path]) -> Path | None:
    """The image an XML describes: its <filename> (a bare name: tools write a path of their own machine), else an
    image of the XML's stem."""
    if parsed.filename:
        name = Path(parsed.filename.replace("\\", "/")).name
        found = next((d / name for d in dirs if (d / name).is_file()), None)
        if found is not None:
            return found
    return next((p for d in dirs for p in sorted(d.glob(f"{parsed.xml.stem}.*")) if is_image(p)), None)


def _image_size(path: Path) -> tuple[float, float]:
    """The image's (width, height) as shown, read from its header (EXIF orientations 5-8 turn it a quarter)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (float(height), float(width)) if turned else (float(width), float(height))


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
        for line in path.read_text(encoding="utf-8-sig").splitlines():
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
        if not path.is_dir():
            return False
        folders = _folders(path)
        return bool(folders) and _looks_voc(_xml_files(folders[0][0])[0])

    def scan(self, path: Path, config: VocConfig) -> Catalog:
        if not path.is_dir() or not (folders := _folders(path)):
            raise DatasetFormatError(f"{path}: no VOC XML files (Annotations/*.xml, or *.xml beside the images)")
        parsed = [(p, split, folder) for folder, split in folders for p in map(parse, _xml_files(folder))]
        labels = self._labels(path, config, [p for p, _, _ in parsed])
        index = {name: i for i, name in enumerate(labels)}
        lists = _split_lists(path)
        records: list[Record] = []
        dropped: list[str] = []
        missing: list[str] = []
        unlisted = 0
        for item, split, folder in parsed:
            if lists is not None and item.xml.stem not in lists:
                unlisted += 1
                continue
            image = _image_of(item, self._image_dirs(path, folder))
            if image is None:
                missing.append(item.filename or item.xml.stem)
                continue
            split = lists[item.xml.stem] if lists is not None else split
            record, left_out = self._record(item, image, split, index, config)
            records.append(record)
            dropped.extend(left_out)
        if missing:
            raise MissingImageError(f"{path}: {len(missing)} image(s) of the XML files not found: "
                                    f"{named_some(missing, 10)}")
        if not records:
            raise EmptyDatasetError(f"{path}: the VOC XML files describe no image")
        return Catalog(self.name, self.task, labels, tuple(records), str(path), shares=config.shares,
                       dropped=tuple(dropped), warnings=self._warnings(path, folders, records, unlisted))

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
        return [root / "JPEGImages", folder, root] if folder.name == "Annotations" else [folder]

    @staticmethod
    def _record(item: _Parsed, image: Path, split: str | None, index: dict[str, int],
                config: VocConfig) -> tuple[Record, list[str]]:
        """The image's record with its normalised boxes, and "where: why" of each object left out; a `BadLabels`
        record when one object cannot be used."""
        if item.problem is not None:
            return BadLabels(image, -1, split, None, None, problem=item.problem), []
        size = item.size or _image_size(image)
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
    def _warnings(path: Path, folders: list[tuple[Path, str | None]], records: list[Record],
                  unlisted: int) -> tuple[str, ...]:
        warnings = []
        if unlisted:
            warnings.append(f"{path}: {unlisted} annotated image(s) are in no ImageSets/Main list "
                            "(train/val/trainval/test.txt) and are left out")
        used = {r.path for r in records}
        dirs = {d for folder, _ in folders for d in VocFormat._image_dirs(path, folder) if d.is_dir()}
        unlabelled = [p for d in sorted(dirs) for p in sorted(d.iterdir()) if is_image(p) and p not in used]
        if unlabelled and lists_absent(path):
            warnings.append(f"{path}: {len(unlabelled)} image(s) have no XML file and are not used (label them, "
                            f"or save them empty in the labelling tool to train them as background), e.g. "
                            f"{unlabelled[0].name}")
        return tuple(warnings)


def lists_absent(root: Path) -> bool:
    return _split_lists(root) is None


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
    reach = max(-x0, -y0, x1 - width, y1 - height)
    if reach > config.tolerance:
        raise LabelError(f"{obj.where}: the box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) reaches outside the "
                         f"{width:g} x {height:g} image by {reach:g} pixels (tolerance {config.tolerance:g}; a spec "
                         f"?tolerance={math.ceil(reach):g} would clip it)")
    box = np.clip([x0 / width, y0 / height, x1 / width, y1 / height], 0.0, 1.0)
    return [*box.tolist(), float(index[obj.name])]


FORMATS.add("voc", VocFormat())
