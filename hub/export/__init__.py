"""The people's labels out of the hub, as a data set in a layout hgen-compile (and the tools teams already use) reads.

A field team's labels are theirs: the knowledge base holds every frame people answered and the class or boxes they
agreed on, and a team wants them in their own training runs, in another tool, or in the next hgen-compile beside
the original images. `hgen-hub export` writes them; which layout is decided by the model's label form (a class:
ImageNet-style class folders, `folder.py`; boxes: the Ultralytics YOLO layout, `yolo.py`), one file each,
registered here by the H-DNN kind descriptor's `label` ("class_id", "boxes"). Regions carry no class and have no
layout. The steps every layout shares (which labels, which images, the held-out split, the manifest) are in
`run.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hgen.hub.errors import ExportError
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class ExportImage:
    """A sample's picture as written: file bytes (the stored JPEG/PNG as it came, or PNG for raw pixels and for an
    image stored sideways) and its extension."""

    data: bytes
    extension: str


@dataclass(frozen=True)
class ExportSample:
    """One human-labelled sample on its way out: its image, the aggregated label and where it goes."""

    sample_id: str
    stem: str  # the file name without extension (the sample id, when that is a safe file name)
    split: str  # "train", or "val" for the hub's held-out labels (the acceptance check's)
    image: ExportImage
    class_id: int | None  # the people's class (class labels)
    payload: bytes  # the serialized hgen.v1.SampleReply (drawn labels read their boxes from it)
    drawn_size: tuple[int, int]  # (width, height) people's drawings are measured in: the stored image's, as the
    # annotator page and the retrain scale them (it differs from the file's for a picture stored sideways)


class SkipSample(ExportError):
    """This sample's label cannot be written in the layout (e.g. a class the names do not cover); counted by reason
    in the export's report, the rest is written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LabelWriter(Protocol):
    """Writes one label form's samples under a folder in one layout, and that layout's index files at the end."""

    data_format: str  # the hgen-compile data format that reads the folder back (`--dataset FORMAT:FOLDER`)

    def add(self, sample: ExportSample) -> tuple[str, str]:
        """Write the sample's image and label; (image path relative to the folder, the label as text for the
        index). SkipSample when its label cannot be written."""

    def finish(self) -> list[str]:
        """Write the layout's index files (classes.txt, data.yaml); notes for the report (e.g. a class only in
        the held-out split)."""


class WriterType(Protocol):
    """A registered layout: `selection()` chooses its labels in SQL; calling it starts a writer in `root`."""

    def selection(self) -> tuple[Any, ...]: ...

    def __call__(self, root: Path, classes: tuple[str, ...]) -> LabelWriter: ...


EXPORTERS: Registry[WriterType] = Registry("label export", error=ExportError, package="hgen.hub.export")
