"""`folder`: ROOT/<class>/*.{jpg,jpeg,png,bmp,webp,tif,tiff,pgm,ppm} (any case), or ROOT/{train,val,test}/<class>/...
when split folders exist.

Class names come from the folder names (sorted; Unicode NFC, so a folder named on macOS matches classes.txt), or
from `classes.txt` in ROOT (its order, and every listed class must have images). Hidden files and folders
(`.DS_Store`, macOS `._*` and `__MACOSX`) are passed over; other files are reported as ignored; a broken symbolic
link named like an image is kept so the reader reports it as unreadable. Sub-folders of a class folder are read,
linked ones too (a link back to a folder already read is reported and not followed). Without split folders, the
shared reader makes a seeded, stratified split (`shares`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from hgen.compiler.data.formats import (FORMATS, SPLIT_ALIASES, Catalog, DataFormat, Record, class_name,
                                        ignored_note, is_image, read_classes_file, visible, walk)
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError
from hgen.runtime.config import StrictModel


def check_shares(value: tuple[float, float, float]) -> tuple[float, float, float]:
    if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6 or value[0] <= 0:
        raise ValueError("shares are (train, val, test) >= 0, train > 0, summing to 1")
    return value


class FolderConfig(StrictModel):
    shares: tuple[float, float, float] = Field((0.7, 0.15, 0.15), title="(train, val, test) shares of the seeded "
                                               "stratified split, used when there are no split folders")
    classes_file: str = Field("classes.txt", title="Class names file in ROOT (one per line); optional")
    recursive: bool = Field(True, title="Also take images in sub-folders of a class folder")

    validate_shares = field_validator("shares")(check_shares)


def _images(folder: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """The image files of a class folder (sub-folders and linked folders too when `recursive`), and notes of the
    files passed over."""
    if recursive:
        paths, notes = walk(folder)
    else:
        paths, notes = sorted(p for p in folder.iterdir() if visible(p)), []
    images, ignored = [], []
    for path in paths:
        if not path.is_file():
            if path.is_symlink() and not path.exists() and is_image(path):
                images.append(path)  # a broken link: the reader names it among the unreadable files
            continue
        (images if is_image(path) else ignored).append(path)
    return images, [*notes, *(ignored_note(p) for p in ignored)]


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p))


def refuse_loose(folder: Path, where: str) -> None:
    """Images lying directly in `folder` have no class: an error, not a silent omission (ROOT beside split folders
    too, where a user's unsorted images would otherwise never be trained or tested on)."""
    loose = sorted(p for p in folder.iterdir() if is_image(p) and (p.is_file() or p.is_symlink()))
    if loose:
        raise DatasetFormatError(f"{folder}: {len(loose)} image(s) lie directly in the folder (e.g. "
                                 f"{loose[0].name}); put each image in {where}")


def split_folders(root: Path) -> dict[str, Path]:
    """{'train': ROOT/train, ...} for the split folders present (any spelling in SPLIT_ALIASES)."""
    found: dict[str, Path] = {}
    for child in _class_dirs(root):
        name = SPLIT_ALIASES.get(child.name.lower())
        if name is not None:
            if name in found:
                raise DatasetFormatError(f"{root}: two folders for split '{name}': {found[name].name}, {child.name}")
            found[name] = child
    return found


class FolderFormat(DataFormat):
    """a folder of class sub-folders holding images (ROOT/<class>/*.jpg or ROOT/train/<class>/*.jpg)"""

    name = "folder"
    priority = 90  # the most general layout: asked last
    Config = FolderConfig

    def detect(self, path: Path) -> bool:
        return path.is_dir()

    def scan(self, path: Path, config: FolderConfig) -> Catalog:
        if not path.is_dir():
            raise DatasetFormatError(f"{path}: the folder format needs a directory")
        splits = split_folders(path)
        if splits:
            others = [p.name for p in _class_dirs(path) if p not in splits.values()]
            if others:
                raise DatasetFormatError(f"{path}: has split folders ({', '.join(p.name for p in splits.values())}) "
                                         f"and other folders ({', '.join(others)}); put every class folder inside "
                                         f"a split folder, or remove the split folders")
        roots = {name: folder for name, folder in splits.items()} if splits else {None: path}
        found: dict[str, list[tuple[Path, str | None]]] = {}
        folders: dict[str, list[Path]] = {}
        ignored: list[str] = []
        for split, root in roots.items():
            for class_dir in _class_dirs(root):
                images, skipped = _images(class_dir, config.recursive)
                ignored.extend(skipped)
                name = class_name(class_dir.name)
                found.setdefault(name, []).extend((p, split) for p in images)
                folders.setdefault(name, []).append(class_dir)
            refuse_loose(root, "a sub-folder named after its class")
        if splits:
            refuse_loose(path, "a split folder's class folder")
        listed = read_classes_file(path / config.classes_file)
        if not found or not any(found.values()):
            passed = f"; passed over {len(ignored)} other file(s), e.g. {ignored[0]}" if ignored else ""
            raise EmptyDatasetError(f"{path}: no images found (expected {'ROOT/<split>/' if splits else 'ROOT/'}"
                                    f"<class>/*.jpg|png|...){passed}")
        if listed is not None:
            unlisted = sorted(set(found) - set(listed))
            if unlisted:
                raise DatasetFormatError(f"{path}: class folder(s) {', '.join(unlisted)} are not in "
                                         f"{config.classes_file}")
            labels = listed
        else:
            labels = tuple(sorted(found))
        for name in labels:
            if not found.get(name):
                places = folders.get(name) or [root / name for root in roots.values()]
                where = ", ".join(str(place) for place in places)
                raise EmptyDatasetError(f"class '{name}' has no images (looked in {where}); add images, or remove "
                                        f"the folder{' and its line in ' + config.classes_file if listed else ''}")
        index = {name: i for i, name in enumerate(labels)}
        records = tuple(Record(p, index[name], split) for name in labels for p, split in found[name])
        return Catalog(self.name, self.task, labels, records, str(path), tuple(ignored), shares=config.shares)


FORMATS.add("folder", FolderFormat())
