"""`inspect_dataset`: what a data set holds (counts per class and split, sizes, channels, unreadable files, images
left out for bad labels) and a contact sheet PNG per class, so a team can check its folder before compiling.
`hgen data inspect` prints it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data.formats import SPLITS, existing
from hgen.compiler.data.images import ImageOptions, Preprocess
from hgen.compiler.data.reader import LoadReport, RawSplit
from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.config import StrictModel

SHEET_IMAGES = 64  # per class
MIN_CELL = 64  # small inputs are scaled up (nearest) so a sheet is readable
SHOWN_LINES = 10  # of the ignored files and dropped labels (COCO's crowd boxes alone are thousands)


STRETCH_WARN = 4.0  # an aspect ratio this many times the input's: stretching distorts it past recognition


@dataclass(frozen=True)
class Inspection:
    name: str
    format: str
    task: str
    origin: str
    labels: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> images (classification) or boxes (detection)
    preprocess: Preprocess
    report: LoadReport | None
    sheets: tuple[Path, ...]
    problems: tuple[str, ...] = ()  # why the compile would refuse the set (an empty split, a class not in train)

    def lines(self) -> list[str]:
        """The human-readable summary `hgen data inspect` prints."""
        unit = "boxes" if self.task == "detect" else "images"
        out = [f"dataset   {self.name}", f"format    {self.format} ({self.task})", f"origin    {self.origin}",
               f"input     {self.preprocess.height}x{self.preprocess.width}x{self.preprocess.channels} "
               f"({self.preprocess.resize}), float32 = uint8 / {self.preprocess.scale:g}"]
        width = max([len(n) for n in self.labels] + [5])
        out.append(f"{unit:<{width}}  " + "  ".join(f"{s:>6}" for s in (*SPLITS, "total")))
        for name in self.labels:
            row = [self.counts[s].get(name, 0) for s in SPLITS]
            out.append(f"{name:<{width}}  " + "  ".join(f"{v:>6}" for v in (*row, sum(row))))
        totals = [sum(self.counts[s].values()) for s in SPLITS]
        out.append(f"{'total':<{width}}  " + "  ".join(f"{v:>6}" for v in (*totals, sum(totals))))
        report = self.report
        if report is not None:
            if report.sizes:
                w = np.array([s[0] for s in report.sizes])
                h = np.array([s[1] for s in report.sizes])
                out.append(f"sizes     {len(w)} files: width {w.min()}..{w.max()} (median {int(np.median(w))}), "
                           f"height {h.min()}..{h.max()} (median {int(np.median(h))})")
            if report.modes:
                out.append("channels  " + ", ".join(f"{m} {n}" for m, n in sorted(report.modes.items())))
            out.append(f"cache     {report.decoded} decoded, {report.cached} from cache"
                       + (" (whole set memory-mapped)" if report.set_cached else ""))
            if report.carved:
                out.append(f"split     {', '.join(report.carved)} carved from train (the source has none)")
            out.append(f"unreadable {len(report.unreadable)} (skipped)" if report.unreadable else "unreadable 0")
            out.extend(f"  {line}" for line in report.unreadable)
            if report.bad_labels:
                out.append(f"bad labels {len(report.bad_labels)} image(s) left out (their labels cannot be used)")
                out.extend(f"  {line}" for line in report.bad_labels)
            if report.oversized:
                out.append(f"oversized {len(report.oversized)} (skipped)")
                out.extend(f"  {line}" for line in report.oversized)
            if report.ignored:
                out.append(f"ignored   {len(report.ignored)} file(s) not used")
                out.extend(_first(report.ignored))
            if report.dropped:
                out.append(f"dropped   {len(report.dropped)} label(s) left out")
                out.extend(_first(report.dropped))
        if self.sheets:
            out.append(f"sheets    {len(self.sheets)} contact sheet(s) in {self.sheets[0].parent}")
        out.extend(f"warning   {line}" for line in self.warnings())
        return out

    def warnings(self) -> list[str]:
        """What will go wrong later: what the compile refuses (an empty split, a class without training images, a
        classifier of one class), what the format found odd, a class its validation split (temperature, tau) or test
        split (the reported accuracy) never shows."""
        found = [f"the compile refuses this: {problem}" for problem in self.problems]
        if self.report is not None:
            found.extend(self.report.warnings)
        if self.task == "classify" and len(self.labels) < 2:
            found.append("one class: a classifier needs at least two (the compile refuses it)")
        if self.report is not None and self.report.sizes and self.preprocess.resize == "stretch":
            ratios = np.array([max(w, h) / max(1, min(w, h)) for w, h in self.report.sizes])
            wanted = max(self.preprocess.width, self.preprocess.height) / max(1, min(self.preprocess.width,
                                                                                self.preprocess.height))
            odd = int(np.sum(ratios > STRETCH_WARN * wanted))
            if odd:
                found.append(f"{odd} image(s) more than {STRETCH_WARN:g}x longer on one side than the input: "
                             "stretched to it (?resize=letterbox keeps their shape)")
        unit = "boxes" if self.task == "detect" else "images"
        unseen = [name for name in self.labels if not self.counts["train"].get(name, 0)
                  and (self.counts["val"].get(name, 0) or self.counts["test"].get(name, 0))]
        if self.task == "detect" and unseen and any(self.counts["train"].values()):
            found.append(f"no train {unit} of {', '.join(repr(n) for n in unseen)}: the model never learns "
                         f"{'it' if len(unseen) == 1 else 'them'}, yet val and test hold some")
        for split, use in (("val", "temperature and tau are fitted"), ("test", "accuracy is measured")):
            missing = [name for name in self.labels if self.counts["train"].get(name, 0)
                       and not self.counts[split].get(name, 0)]
            if missing and any(self.counts[split].values()):  # an empty split is one of the problems
                found.append(f"no {split} {unit} of {', '.join(repr(n) for n in missing)}: {use} without "
                             f"{'it' if len(missing) == 1 else 'them'}")
        return found


def _first(lines: tuple[str, ...]) -> list[str]:
    """The first SHOWN_LINES lines, indented, and how many more there are."""
    shown = [f"  {line}" for line in lines[:SHOWN_LINES]]
    return shown + ([f"  ... and {len(lines) - SHOWN_LINES} more"] if len(lines) > SHOWN_LINES else [])


def inspect_dataset(spec: str, *, out_dir: str | Path | None = None, seed: int = 0, limit: int | None = None,
                    format: str | None = None, image: ImageOptions | Mapping[str, Any] | None = None,
                    format_options: Mapping[str, Any] | StrictModel | None = None,
                    per_sheet: int = SHEET_IMAGES, strict: bool = False) -> Inspection:
    """Load `spec` (a path or a built-in name) and summarise it; write contact sheets into `out_dir` if given.

    Unless `strict`, any share of unreadable files and of images with bad labels is tolerated (they are listed):
    inspecting is how one finds them.
    """
    from hgen.compiler.data import resolve_user_spec, user_location

    if out_dir:
        _sheet_folder(Path(out_dir))  # before the load: a bad --out fails at once, not after decoding everything
    location = user_location(spec, format)
    if location is None:  # a built-in data set: already in memory
        return _inspect_builtin(spec, out_dir, seed, limit, per_sheet)

    from hgen.compiler.data.reader import read_catalog, untrained_classes

    user = resolve_user_spec(location, image, format_options)
    options = user.options
    if not strict and "max_unreadable_fraction" not in (image.model_fields_set if isinstance(image, ImageOptions)
                                                        else (image or {})):
        options = options.model_copy(update={"max_unreadable_fraction": 1.0})
    catalog = user.format.scan(existing(user.path), user.config)  # absent or unlookable: a typed error
    loaded = read_catalog(catalog, options, seed=seed, limit=limit)
    name = str(user.spec)
    counts = _counts(loaded.splits, catalog.labels)
    sheets = _write_sheets(loaded.splits, catalog.labels, Path(out_dir), per_sheet) if out_dir else ()
    problems = (*untrained_classes(catalog), *loaded.report.empty)
    return Inspection(name, catalog.format, catalog.task, catalog.origin, catalog.labels, counts, loaded.preprocess,
                      loaded.report, sheets, problems)


def _inspect_builtin(spec: str, out_dir: str | Path | None, seed: int, limit: int | None,
                     per_sheet: int) -> Inspection:
    """A built-in set, classification or detection (`digits-det`: boxes counted per class and drawn on the sheets,
    as for a user's YOLO set): its float images back to uint8 for the sheets."""
    from hgen.compiler.data import load_dataset
    from hgen.compiler.data.detection import is_detection_spec, load_detection_dataset

    detect = is_detection_spec(spec)
    data = load_detection_dataset(spec, seed=seed, limit=limit) if detect else load_dataset(spec, seed=seed,
                                                                                            limit=limit)
    splits = {name: RawSplit(np.clip(part.x * 255.0 + 0.5, 0, 255).astype(np.uint8),
                             np.zeros(0, np.int64) if detect else part.y, part.boxes if detect else None, ())
              for name, part in (("train", data.train), ("val", data.val), ("test", data.test))}
    height, width, channels = data.input_shape
    pre = data.preprocess or Preprocess(height=height, width=width, channels=channels, colour_order="L")
    sheets = _write_sheets(splits, data.labels, Path(out_dir), per_sheet) if out_dir else ()
    return Inspection(data.name, "builtin", "detect" if detect else "classify", data.origin, data.labels,
                      _counts(splits, data.labels), pre, None, sheets)


def _counts(splits: Mapping[str, RawSplit], labels: tuple[str, ...]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = splits[split]
        if part.boxes is None:
            found = np.bincount(part.y.astype(np.int64), minlength=len(labels)) if len(part.y) else \
                np.zeros(len(labels), np.int64)
        else:
            classes = [int(c) for b in part.boxes for c in b[:, 4]]
            found = np.bincount(np.array(classes, np.int64), minlength=len(labels))
        counts[split] = {name: int(found[k]) for k, name in enumerate(labels)}
    return counts


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _sheet_folder(out_dir: Path) -> None:
    """Make the contact sheet folder, or say why it cannot be (a file of that name, no permission) as a typed error."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write contact sheets into {out_dir}: {exc.strerror or exc}") from None


def _write_sheets(splits: Mapping[str, RawSplit], labels: tuple[str, ...], out_dir: Path,
                  per_sheet: int) -> tuple[Path, ...]:
    """One PNG per class: up to `per_sheet` of its images (train first), boxes drawn for detection sets."""
    from PIL import Image, ImageDraw

    _sheet_folder(out_dir)
    written = []
    for k, name in enumerate(labels):
        tiles: list[tuple[np.ndarray, np.ndarray | None]] = []
        for split in SPLITS:
            part = splits[split]
            for i in range(len(part.x)):
                if len(tiles) >= per_sheet:
                    break
                if part.boxes is None and int(part.y[i]) == k:
                    tiles.append((np.asarray(part.x[i]), None))
                elif part.boxes is not None and (part.boxes[i][:, 4] == k).any():
                    tiles.append((np.asarray(part.x[i]), part.boxes[i][part.boxes[i][:, 4] == k]))
        if not tiles:
            continue
        h, w, c = tiles[0][0].shape
        zoom = max(1, math.ceil(MIN_CELL / max(h, w)))
        cols = math.ceil(math.sqrt(len(tiles)))
        rows = math.ceil(len(tiles) / cols)
        gap = 2
        sheet = Image.new("RGB", (cols * (w * zoom + gap) + gap, rows * (h * zoom + gap) + gap), (40, 40, 40))
        draw = ImageDraw.Draw(sheet)
        for t, (array, boxes) in enumerate(tiles):
            tile = Image.fromarray(array[..., 0] if c == 1 else array, "L" if c == 1 else "RGB").convert("RGB")
            tile = tile.resize((w * zoom, h * zoom), Image.NEAREST)
            left, top = gap + (t % cols) * (w * zoom + gap), gap + (t // cols) * (h * zoom + gap)
            sheet.paste(tile, (left, top))
            for x0, y0, x1, y1, _ in (boxes if boxes is not None else []):
                draw.rectangle([left + x0 * w * zoom, top + y0 * h * zoom, left + x1 * w * zoom - 1,
                                top + y1 * h * zoom - 1], outline=(255, 64, 64))
        path = out_dir / f"{k:03d}_{_safe(name)}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            sheet.save(tmp, format="PNG")
            tmp.replace(path)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot write the contact sheet {path}: {exc.strerror or exc}") from None
        written.append(path)
    return tuple(written)
