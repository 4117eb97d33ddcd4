"""Class labels as class folders: ROOT/{train,val}/<class name>/<sample>.png|jpg and ROOT/classes.txt.

The layout of Keras' `image_dataset_from_directory`, torchvision's ImageFolder and hgen-compile's `folder` format
(`--dataset folder:ROOT`). classes.txt lists the classes that have labels, in the model's order, so class numbers
stay the model's where every class has labels and names match the original data's folders where merged with it.
A class name a folder cannot hold as itself (FashionMNIST's "T-shirt/top", a leading dot, which readers pass over
as hidden, a leading # or a space at either end, which classes.txt cannot hold) gets a folder name that reads back
(`folder_name`) and is said; two classes that would share one are refused before anything is written.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from hgen.hub.errors import ExportError
from hgen.hub.export import EXPORTERS, ExportSample, SkipSample
from hgen.hub.kb.models import Reply

MAX_NAME_BYTES = 255  # a file name on ext4, XFS, APFS and NTFS
UNSAFE = re.compile(r"[/\\\0\r\n]")


def folder_name(name: str, index: int) -> str:
    """A folder name that reads back as itself (through the `folder` format and classes.txt): the class name, with
    a slash or a line break made `_` (FashionMNIST's "T-shirt/top"), spaces at either end dropped (classes.txt
    trims its lines), a `_` before a leading dot (hidden to readers) or # (a comment in classes.txt), and cut to a
    file name's length; `class_<index>` when nothing is left."""
    safe = UNSAFE.sub("_", name).strip()
    if safe.startswith((".", "#")) or safe == "__MACOSX":
        safe = "_" + safe
    while len(safe.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        safe = safe[:-1].rstrip()
    return safe or f"class_{index}"


class FolderWriter:
    """Class folders per split; classes.txt at the end, of the classes written (by their folders' names)."""

    data_format = "folder"

    def __init__(self, root: Path, classes: tuple[str, ...]) -> None:
        self.folders = tuple(folder_name(name, i) for i, name in enumerate(classes))
        taken: dict[str, str] = {}
        for name, folder in zip(classes, self.folders):
            if folder in taken:
                raise ExportError(f"classes {taken[folder]!r} and {name!r} would both be folder {folder!r}: name the "
                                  "classes apart (web.class_names in the hub config)")
            taken[folder] = name
        self.root = root
        self.classes = classes
        self.written: Counter[tuple[str, int]] = Counter()  # (split, class) -> images

    @staticmethod
    def selection() -> tuple[Any, ...]:
        return (Reply.class_id.is_not(None),)

    def add(self, sample: ExportSample) -> tuple[str, str]:
        if sample.class_id is None or not 0 <= sample.class_id < len(self.classes):
            raise SkipSample("class outside the model's classes")
        name = self.classes[sample.class_id]
        relative = Path(sample.split) / self.folders[sample.class_id] / f"{sample.stem}{sample.image.extension}"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sample.image.data)
        self.written[(sample.split, sample.class_id)] += 1
        return relative.as_posix(), name

    def finish(self) -> list[str]:
        present = sorted({label for _, label in self.written})
        (self.root / "classes.txt").write_text("".join(f"{self.folders[i]}\n" for i in present), encoding="utf-8")
        renamed = [f"{self.classes[i]!r} as {self.folders[i]!r}" for i in present if self.folders[i] != self.classes[i]]
        notes = [f"class folder(s) named apart from their class, which a folder name cannot hold: {', '.join(renamed)} "
                 "(samples.csv keeps the class names)"] if renamed else []
        trained = {label for split, label in self.written if split == "train"}
        notes += [f"class {self.classes[i]!r} has labels only in the held-out split (val): a compile on this folder "
                  "refuses a class it never trains on" for i in present if i not in trained]
        held = {label for split, label in self.written if split == "val"}
        if held and held != set(present):
            absent = [self.classes[i] for i in present if i not in held]
            notes.append(f"val/ has no labels of {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}: tools "
                         "that number classes by the folders present (Keras' image_dataset_from_directory, "
                         "torchvision's ImageFolder) number val/ differently from train/; give them the names of "
                         "classes.txt (class_names=...)")
        missing = [self.classes[i] for i in range(len(self.classes)) if i not in present]
        if missing:
            notes.append(f"{len(missing)} class(es) without labels, left out of classes.txt (class numbers shift "
                         f"after them): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return notes


EXPORTERS.add("class_id", FolderWriter)
