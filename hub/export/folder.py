"""Class labels as class folders: ROOT/{train,val}/<class name>/<sample>.png|jpg and ROOT/classes.txt.

The layout of Keras' `image_dataset_from_directory`, torchvision's ImageFolder and hgen-compile's `folder` format
(`--dataset folder:ROOT`). classes.txt lists the classes that have labels, in the model's order, so class numbers
stay the model's where every class has labels and names match the original data's folders where merged with it.
A name that cannot be a folder name the `folder` format reads back as the same class (a `/` or a line break, a
leading dot, which readers pass over as hidden, a leading #, or a space at either end, which classes.txt cannot
hold, or longer than a file name may be) is refused before anything is written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hgen.hub.errors import ExportError
from hgen.hub.export import EXPORTERS, ExportSample, SkipSample
from hgen.hub.kb.models import Reply

MAX_NAME_BYTES = 255  # a file name on ext4, XFS, APFS and NTFS


def folder_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class folder that reads back as itself; None when it can."""
    if "/" in name or "\\" in name or "\0" in name or "\n" in name or "\r" in name:
        return "holds a slash, a line break or a NUL"
    if name != name.strip() or name.startswith("#"):
        return "starts or ends with a space, or starts with #: classes.txt trims its lines and skips comments"
    if name.startswith(".") or name == "__MACOSX":
        return "would be a hidden folder, which readers pass over"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"is longer than a file name may be ({MAX_NAME_BYTES} bytes)"
    return None


class FolderWriter:
    """Class folders per split; classes.txt at the end, of the classes written."""

    data_format = "folder"

    def __init__(self, root: Path, classes: tuple[str, ...]) -> None:
        problems = [f"{name!r} {problem}" for name in classes if (problem := folder_name_problem(name)) is not None]
        if problems:
            raise ExportError(f"class name {problems[0]}: it cannot be a class folder; name the classes "
                              "(web.class_names in the hub config) or export a model whose bundle names them so")
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
        relative = Path(sample.split) / name / f"{sample.stem}{sample.image.extension}"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sample.image.data)
        self.written[(sample.split, sample.class_id)] += 1
        return relative.as_posix(), name

    def finish(self) -> list[str]:
        present = sorted({label for _, label in self.written})
        (self.root / "classes.txt").write_text("".join(f"{self.classes[i]}\n" for i in present), encoding="utf-8")
        trained = {label for split, label in self.written if split == "train"}
        notes = [f"class {self.classes[i]!r} has labels only in the held-out split (val): a compile on this folder "
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
