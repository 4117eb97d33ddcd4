"""`csv`: a manifest `path,label[,split]` with a header row; paths are relative to the manifest's folder.

Class names: `classes.txt` beside the manifest (its order; every label must be listed), else the sorted labels
(Unicode NFC, as the folder format's). A path written on Windows (`images\\cat\\1.jpg`) or in the other Unicode
normal form than the file on disk (macOS) is found all the same.
Rows without a split (no column, or an empty cell) go to the shared seeded stratified split (`shares`).
A row naming a missing file is an error (MissingImageError lists them); corrupt files follow the reader's policy.
An image listed twice with the same label and split is kept once and the copy reported (`dropped`); with another
label or split it is a LabelError naming both lines.
"""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

from pydantic import Field, field_validator

from hgen.compiler.data.formats import (FORMATS, Catalog, DataFormat, Record, class_name, read_classes_file,
                                        split_name)
from hgen.compiler.data.formats.folder import check_shares
from hgen.compiler.errors import DatasetFormatError, EmptyDatasetError, LabelError, MissingImageError
from hgen.runtime.config import StrictModel

MANIFEST_NAMES = ("manifest.csv", "labels.csv", "data.csv")


class CsvConfig(StrictModel):
    path_column: str = Field("path", title="Column with the image path (relative to the manifest)")
    label_column: str = Field("label", title="Column with the class name")
    split_column: str = Field("split", title="Optional column with train/val/test")
    delimiter: str = Field(",", min_length=1, max_length=1, title="Field delimiter")
    classes_file: str = Field("classes.txt", title="Class names file beside the manifest; optional")
    shares: tuple[float, float, float] = Field((0.7, 0.15, 0.15), title="(train, val, test) shares for rows "
                                               "without a split")

    validate_shares = field_validator("shares")(check_shares)


def find_image(base: Path, rel: str) -> Path:
    """The file a manifest row names: as written, else with Windows separators turned into '/' and in either Unicode
    normal form (the manifest was typed on one system, the files copied from another); as written when none is."""
    written = (base / rel).expanduser()
    if written.is_file():
        return written
    text = rel.replace("\\", "/")
    for form in ("NFC", "NFD"):
        candidate = (base / unicodedata.normalize(form, text)).expanduser()
        if candidate.is_file():
            return candidate
    return written


def manifest_in(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() == ".csv" else None
    if path.is_dir():
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return path / name
    return None


class CsvFormat(DataFormat):
    """a CSV manifest with columns path,label[,split] (a .csv file, or a folder holding manifest.csv)"""

    name = "csv"
    priority = 30
    Config = CsvConfig

    def detect(self, path: Path) -> bool:
        return manifest_in(path) is not None

    def scan(self, path: Path, config: CsvConfig) -> Catalog:
        manifest = manifest_in(path)
        if manifest is None:
            raise DatasetFormatError(f"{path}: no CSV manifest (a .csv file, or {' / '.join(MANIFEST_NAMES)} in "
                                     f"the folder)")
        base = manifest.parent
        try:
            with manifest.open(newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle, delimiter=config.delimiter))
                columns = rows[0].keys() if rows else []
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetFormatError(f"{manifest}: cannot read the manifest ({exc})") from None
        if not rows:
            raise EmptyDatasetError(f"{manifest}: the manifest has no rows")
        for column in (config.path_column, config.label_column):
            if column not in columns:
                raise DatasetFormatError(f"{manifest}: no '{column}' column (header: {', '.join(columns)})")
        entries: list[tuple[Path, str, str | None]] = []
        missing: list[str] = []
        first: dict[Path, tuple[int, str, str | None]] = {}  # each image's first line, label and split
        dropped: list[str] = []
        for line, row in enumerate(rows, start=2):
            where = f"{manifest}:{line}"
            rel = (row.get(config.path_column) or "").strip()
            label = class_name((row.get(config.label_column) or "").strip())
            if not rel or not label:
                raise LabelError(f"{where}: empty path or label")
            cell = (row.get(config.split_column) or "").strip()
            split = split_name(cell, where) if cell else None
            image = find_image(base, rel)
            copied = _copy_of(manifest, first, image, line, label, split)
            if copied is not None:
                dropped.append(f"{where}: {rel} is listed again (as on line {copied}), left out")
                continue
            if not image.is_file():
                missing.append(rel)
            entries.append((image, label, split))
        if missing:
            raise MissingImageError(f"{manifest}: {len(missing)} listed image(s) do not exist (paths are relative to "
                                    f"{base}): {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
        listed = read_classes_file(base / config.classes_file)
        names = sorted({label for _, label, _ in entries})
        if listed is not None:
            unknown = [n for n in names if n not in listed]
            if unknown:
                raise LabelError(f"{manifest}: label(s) {', '.join(unknown)} are not in {config.classes_file}")
            empty = [n for n in listed if n not in names]
            if empty:
                raise EmptyDatasetError(f"{manifest}: class(es) {', '.join(empty)} listed in {config.classes_file} "
                                        f"have no images")
        labels = listed or tuple(names)
        index = {name: i for i, name in enumerate(labels)}
        records = tuple(Record(image, index[label], split) for image, label, split in entries)
        return Catalog(self.name, self.task, labels, records, str(manifest), shares=config.shares,
                       dropped=tuple(dropped))


def _copy_of(manifest: Path, first: dict[Path, tuple[int, str, str | None]], image: Path, line: int, label: str,
             split: str | None) -> int | None:
    """The earlier line listing `image` with the same label and split (this one is a copy); a LabelError when it has
    another label (which is right?) or split (an image in two splits is measured on what it trained on); None, and
    the line recorded, when `image` is new."""
    key = image.resolve()
    if key not in first:
        first[key] = (line, label, split)
        return None
    was, old_label, old_split = first[key]
    if old_label != label:
        raise LabelError(f"{manifest}:{line}: {image} is labelled '{label}' here and '{old_label}' on line {was}; an "
                         "image has one class: keep the right line and remove the other")
    if old_split != split:
        raise LabelError(f"{manifest}:{line}: {image} is in split {split or '(none)'} here and "
                         f"{old_split or '(none)'} on line {was}; an image in two splits is tested on what it trained "
                         "on: keep one line")
    return was


FORMATS.add("csv", CsvFormat())
