"""Data set formats on disk: one module per format (`folder`, `csv`, `yolo`, `coco`, `voc`, `idx`), registered by
name.

A format turns a path into a `Catalog` (class names + one `Record` per image file, with its class or boxes and,
when the layout says so, its split). It only lists and validates: decoding, resizing, splitting and caching are
shared (`hgen.compiler.data.reader`). Each format has a strict typed `Config`.

`detect_format(path)` asks the formats in order of `priority` (most specific first); a spec `FORMAT:PATH`
(e.g. `folder:/data/cams`) overrides the detection. Adding a format is adding a file.
"""

from __future__ import annotations

import math
import os
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from hgen.compiler.errors import DatasetFormatError, DatasetNotFoundError, DatasetSpecError, UnknownNameError
from hgen.runtime.class_names import unclear_class_names
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.registry import Registry

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
Task = Literal["classify", "detect"]


@dataclass(frozen=True)
class Record:
    """One image file: its class (classification) or boxes (detection), and its split when the layout fixes it.

    `boxes` is [k, 5] (x0, y0, x1, y1 normalised to the original image, class index). `size` is the (width, height)
    the labels were drawn on, when the format records it (COCO): the reader refuses a file of another shape.
    """

    path: Path
    label: int = -1
    split: str | None = None
    boxes: np.ndarray | None = None
    size: tuple[float, float] | None = None


@dataclass(frozen=True)
class Catalog:
    """What a format found: class names, one record per image, where it came from and what it left out."""

    format: str
    task: Task
    labels: tuple[str, ...]
    records: tuple[Record, ...]
    origin: str
    ignored: tuple[str, ...] = field(default=())  # files present but not images (named in `inspect`)
    dropped: tuple[str, ...] = field(default=())  # "where: why" of each label entry left out (empty or crowd boxes)
    warnings: tuple[str, ...] = field(default=())  # what loads but may not be meant (images without labels)
    default_size: tuple[int, int] = (96, 96)
    shares: tuple[float, float, float] = (0.7, 0.15, 0.15)  # for records without a split
    # In-memory formats (IDX, the built-in MNIST family) give uint8 images [n, h, w] or [n, h, w, c] per split
    # instead of records; the reader resizes them like decoded files (no cache needed, nothing to decode).
    arrays: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None

    def __post_init__(self) -> None:
        problem = unclear_class_names(self.labels)
        if problem is not None:  # "cat" and "cat " were two classes people could not tell apart
            raise DatasetFormatError(f"{self.origin}: its class names: {problem}")


class DataFormat(ABC):
    """A registered format: detection, its config model and the scan."""

    name: ClassVar[str]
    task: ClassVar[Task] = "classify"
    priority: ClassVar[int] = 50  # lower is asked first
    Config: ClassVar[type[StrictModel]]

    @abstractmethod
    def detect(self, path: Path) -> bool:
        """True when `path` looks like this format (cheap: names and small files only)."""

    @abstractmethod
    def scan(self, path: Path, config: Any) -> Catalog:
        """List and validate the records; raise a typed DatasetError naming the file or class on bad input."""


FORMATS: Registry[DataFormat] = Registry("data format", UnknownNameError, package=__name__)


def format_names() -> list[str]:
    return FORMATS.names()


def get_format(name: str) -> DataFormat:
    return FORMATS.get(name)


def detect_format(path: str | Path) -> DataFormat:
    """The format of an existing path, or DatasetFormatError saying what each format expects."""
    path = existing(Path(path).expanduser())
    for _, fmt in sorted(FORMATS.items(), key=lambda item: (item[1].priority, item[0])):
        if fmt.detect(path):
            return fmt
    raise DatasetFormatError(f"'{path}' is not a data set hgen recognises; expected one of: "
                             + "; ".join(f"{name}: {(fmt.__doc__ or '').strip().splitlines()[0]}"
                                         for name, fmt in FORMATS.items())
                             + ". Name the format explicitly as FORMAT:PATH if detection guessed wrong.")


def parse_format_config(fmt: DataFormat, options: Mapping[str, Any] | StrictModel | None) -> StrictModel:
    if isinstance(options, fmt.Config):
        return options
    if isinstance(options, StrictModel):
        options = options.model_dump()
    return parse_config(fmt.Config, options, source=f"{fmt.name} format options", error=DatasetSpecError)


def scan(path: str | Path, format: str | None = None, options: Mapping[str, Any] | StrictModel | None = None
         ) -> Catalog:
    """Detect (or take) the format and scan the path."""
    path = Path(path).expanduser()
    fmt = get_format(format) if format else detect_format(path)
    return fmt.scan(existing(path), parse_format_config(fmt, options))


def path_exists(path: Path) -> bool:
    """`path.exists()`, False where the system refuses to look the name up: Python 3.11 raises OSError for a part
    over 255 bytes (ENAMETOOLONG), which a spec's long query or variant makes of the whole text."""
    try:
        return path.exists()
    except OSError:
        return False


def lookable(path: Path) -> Path:
    """`path`, or DatasetSpecError when the system cannot even look it up (a name too long): a typed error naming the
    path instead of the OSError traceback every later `exists()` or `is_dir()` would end in."""
    try:
        path.exists()
    except OSError as exc:
        raise DatasetSpecError(f"data set path '{path}' cannot be looked up: {exc.strerror or exc}") from None
    return path


def existing(path: Path) -> Path:
    """`path`, or DatasetNotFoundError when it is absent (DatasetSpecError when it cannot be looked up)."""
    if not lookable(path).exists():
        raise DatasetNotFoundError(f"data set path '{path}' does not exist")
    return path


def looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or "/" in text or path_exists(Path(text))


@dataclass(frozen=True)
class Location:
    """A parsed user data spec: `[FORMAT:]PATH[:VARIANT][?params]`."""

    format: str | None
    path: Path
    variant: str
    query: str


def parse_location(text: str) -> Location | None:
    """`/data/cams`, `folder:/data/cams`, `/data/cams:lowres?factor=2`; None when `text` is not a path spec.

    A folder whose own name holds ':' or '?' (`run:2`, `what?`) is taken whole when it exists, before the ':' of a
    variant or the '?' of parameters is looked for."""
    text = text.strip()
    first, sep, rest = text.partition(":")
    fmt = first if sep and first in FORMATS and rest else None
    whole = rest if fmt else text
    if path_exists(Path(whole).expanduser()):
        return Location(fmt, Path(whole).expanduser(), "clean", "")
    head, _, query = whole.partition("?")
    if fmt is None and not looks_like_path(head.split(":")[0] if ":" in head else head):
        return None
    path_text, variant = head, "clean"
    if ":" in head and not path_exists(Path(head).expanduser()):
        candidate, _, tail = head.rpartition(":")
        if "/" not in tail and candidate:
            path_text, variant = candidate, tail
    return Location(fmt, lookable(Path(path_text).expanduser()), variant or "clean", query)


def split_name(text: str, where: str) -> str:
    """Normalise a split name (train/val/test and common spellings) or raise LabelError naming `where`."""
    from hgen.compiler.errors import LabelError

    name = SPLIT_ALIASES.get(text.strip().lower())
    if name is None:
        raise LabelError(f"{where}: unknown split '{text}'; use one of {', '.join(SPLITS)}")
    return name


def class_name(text: str) -> str:
    """A class name as text the bundle can store and people can compare: NFC (macOS writes folder names decomposed,
    so 'café' typed in classes.txt would not match the folder), and bytes that are not UTF-8 (a folder named on an
    old Windows, kept by Python as surrogates that no JSON, protobuf or terminal accepts) shown as \\xNN."""
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return unicodedata.normalize("NFC", text)


def pixel_box(corners: tuple[float, float, float, float], width: float, height: float, tolerance: float,
              outside: Callable[[], str]) -> list[float]:
    """Pixel corners (x0, y0, x1, y1) normalised to the image and clipped to it; a LabelError "<outside()> by N
    pixels (...)" when they reach past its edge by more than `tolerance` pixels (COCO's and VOC's boxes are pixels;
    the message is only made for a box that fails, not for each of a large set's boxes)."""
    from hgen.compiler.errors import LabelError

    x0, y0, x1, y1 = corners
    reach = max(-x0, -y0, x1 - width, y1 - height)
    if reach > tolerance:
        raise LabelError(f"{outside()} by {reach:g} pixels (tolerance {tolerance:g}; a spec "
                         f"?tolerance={math.ceil(reach):g} would clip it)")
    return np.clip([x0 / width, y0 / height, x1 / width, y1 / height], 0.0, 1.0).tolist()


def read_classes_file(path: Path) -> tuple[str, ...] | None:
    """One class name per line (blank lines and # comments skipped, a UTF-8 byte-order mark allowed); None when the
    file is absent."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(f"{path}: cannot read the class names as UTF-8 text ({exc})") from None
    names = [class_name(line.strip()) for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DatasetFormatError(f"{path}: lists no class names")
    if len(set(names)) != len(names):
        raise DatasetFormatError(f"{path}: a class name is listed twice")
    return tuple(names)


# Image types cameras and tools write that hgen does not train on (the device's OpenCV may not decode them): named
# when passed over, so a phone's folder of .HEIC photos is not a silent "no images".
FOREIGN_IMAGES = (".heic", ".heif", ".avif", ".gif", ".jp2", ".jxl", ".dng", ".cr2", ".nef", ".arw")


def ignored_note(path: Path) -> str:
    """How a file the layout passes over is reported: its path, and why when it is an image of another type."""
    if path.suffix.lower() in FOREIGN_IMAGES:
        return f"{path}: a {path.suffix} image, a type hgen does not read (convert it to JPEG or PNG)"
    return str(path)


def named_some(items: Sequence[object], n: int = 3) -> str:
    """The first `n` of `items`, and how many more there are: a message names a few places, not hundreds."""
    return ", ".join(str(item) for item in items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def is_image(path: Path) -> bool:
    from hgen.compiler.data.images import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def visible(path: Path) -> bool:
    """False for what the layouts pass over without a word: hidden names (`.DS_Store`, macOS `._*`) and macOS'
    `__MACOSX` archive folder. Other names, `__background__/` or `__0001.jpg` too, are the user's data."""
    return not path.name.startswith(".") and path.name != "__MACOSX"


def walk(folder: Path) -> tuple[list[Path], list[str]]:
    """The visible files under `folder` (sorted; broken links included), following symbolic links to folders as
    people expect of a class folder (Python 3.11's `rglob` does not); a link back to a folder already walked (a
    loop, or the same folder twice) is not followed and is named in the second list."""
    files: list[Path] = []
    skipped: list[str] = []
    seen = {os.path.realpath(folder)}
    for top, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs):
            sub = Path(top, name)
            if not visible(sub):
                continue
            real = os.path.realpath(sub)
            if real in seen:
                skipped.append(f"{sub}: a link to {real}, a folder already read (not followed again)")
                continue
            seen.add(real)
            kept.append(name)
        dirs[:] = kept
        files.extend(Path(top, name) for name in names if visible(Path(name)))
    return sorted(files), skipped
