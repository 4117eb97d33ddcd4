"""The built-in data sets by name, one file each: `mnist`, `fashion-mnist`, `digits`, and `auto` (a choice among them).

`BUILTINS` discovers this package on first use, so adding a built-in is adding a file that registers a `Builtin`:
`load_dataset(name)` reads it, spec errors list it, and what callers need to know of it (its labels, its title in
messages, its synthetic detection set, the demo's preset) is declared on it instead of compared by name elsewhere.
Every built-in's images are uint8 [n, 28, 28] (`IMAGE_SIZE`) per official split; `load_dataset` splits and scales.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from hgen.compiler.data.sources import IdxSource, RawData, locate
from hgen.compiler.errors import UnknownNameError
from hgen.runtime.registry import Registry

IMAGE_SIZE = 28
DIGIT_LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DemoDefaults:
    """What `hgen demo` asks of a compile on this data set and how long it trains, when the user leaves it unset
    (plain numbers: the demo builds its `Demands` from them, so reading data never imports the search)."""

    accuracy: float
    base_epochs: int
    final_epochs: int
    latency_ms: float = 1000.0
    storage_mb: float = 0.3
    energy_mj: float = 0.2
    labour: float = 0.05


class Builtin(ABC):
    """A data set known by name. `resolve` says which data set's images the name stands for (itself, or for a
    choice like `auto` one of the others) and reads them."""

    name: ClassVar[str]
    title: ClassVar[str]  # how messages call it: "FashionMNIST"
    rank: ClassVar[int] = 50  # listing order in errors and `dataset_names` (lower first), most used first
    detection: ClassVar[str | None] = None  # the synthetic detection set pasting its images on canvases (`*-det`)
    demo: ClassVar[DemoDefaults | None] = None  # None: the demo treats it as a user's own data

    @abstractmethod
    def resolve(self, root: Path | None, allow_download: bool) -> Resolved:
        """The data set this name stands for and its raw images; DatasetNotFoundError names where it looked."""


class BuiltinData(Builtin):
    """A built-in with images of its own."""

    labels: ClassVar[tuple[str, ...]]

    @abstractmethod
    def read(self, root: Path | None, allow_download: bool) -> RawData:
        """Its uint8 images [n, 28, 28] and labels per official split ('test' always)."""

    def resolve(self, root: Path | None, allow_download: bool) -> Resolved:
        return Resolved(self, self.read(root, allow_download))


class IdxBuiltin(BuiltinData):
    """A built-in read from IDX files found by `sources.locate` (an explicit root, $HGEN_DATA, Debian, Keras).
    `source` is per instance so a test can point one data set at its own folders (`setattr(builtin, "source", ...)`)."""

    source: IdxSource

    def read(self, root: Path | None, allow_download: bool) -> RawData:
        return locate(self.source, root, allow_download)


@dataclass(frozen=True)
class Resolved:
    """What a built-in name resolved to: the data set read, its raw images, and why it is not the one asked for
    (`auto` falling back), which the demo prints."""

    data: BuiltinData
    raw: RawData
    note: str = ""


BUILTINS: Registry[Builtin] = Registry("built-in data set", UnknownNameError, package=__name__)


def register(builtin: Builtin) -> Builtin:
    """Add a built-in under its own `name` (one place names it)."""
    BUILTINS.add(builtin.name, builtin)
    return builtin


def builtin_names() -> list[str]:
    """The registered names by `rank`, then name: the order errors and `dataset_names` list them in."""
    return [name for name, _ in sorted(BUILTINS.items(), key=lambda item: (item[1].rank, item[0]))]


def get_builtin(name: str) -> Builtin:
    return BUILTINS.get(name)


def detection_bases() -> dict[str, str]:
    """Synthetic detection set -> the built-in whose images it pastes on canvases, as each built-in declares: the
    detection loader reads them, and spec errors tell them apart from the classification names."""
    return {builtin.detection: name for name, builtin in BUILTINS.items() if builtin.detection}


def detection_names() -> list[str]:
    return sorted(detection_bases())

