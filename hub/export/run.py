"""`export_labels`: what every layout shares. Which labels, which images, which split, the index, and all or nothing.

- Labels: the ones a retrain reads (`hgen.hub.retrain.records`: device samples, gold tasks and the answers of
  paused annotators left out; a drawing only where most of the people asked stand behind it), all of them: a
  retrain's own limits (the newest `retrain.max_labels`, its filter of unlike samples) are not applied.
- Split: the hub's own held-out labels (`hgen.hub.retrain.data.held_out`, the acceptance check's) go to `val`, the
  rest to `train`: a model compiled on the export and published back is not judged on labels it trained on.
- Images: the stored JPEG or PNG bytes as they came (no second compression), PNG for raw pixels and for a picture
  stored sideways (turned upright, as people saw it). A sample whose image retention removed, whose file cannot be
  read or that does not decode is left out and counted by reason; so is one below `min_agreement`. An `image_dir`
  that is not there (another machine, another working folder for a relative path) is refused, not read as all
  images gone.
- Index: `samples.csv` (a row per image: sample, split, label, how many people answered and how many of those
  answers were SIMULATED, how far they agreed, device, model version, when) and `export.json` (the counts).
- All or nothing: written into a hidden folder beside `out` and renamed at the end; an export that fails (a full
  disk too) leaves nothing at `out`, and `out` must be new (or an empty folder of its own). Parent folders it made
  stay.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy import func, or_, select

from hgen.hub.config import HubConfig, people_class_names
from hgen.hub.errors import ExportError, KnowledgeBaseError
from hgen.hub.export import EXPORTERS, ExportImage, ExportSample, SkipSample, WriterType
from hgen.hub.images import sniff
from hgen.hub.kb.models import Annotator, AnswerRow, Reply, Sample
from hgen.hub.kb.retention import REMOVED_IMAGE
from hgen.hub.kb.store import GOLD_TRANSPORT, KnowledgeBase
from hgen.hub.retrain.data import held_out
from hgen.hub.retrain.records import human_label, labelled_query
from hgen.protos import hub_pb2
from hgen.protos.kinds import kind_of_wire
from hgen.runtime.orientation import decode_upright, exif_orientation

PAGE = 200  # samples read per query: a bounded page of images in memory, and no transaction held for the export
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
EXTENSIONS = {hub_pb2.IMAGE_FORMAT_PNG: ".png", hub_pb2.IMAGE_FORMAT_JPEG: ".jpg"}
COLUMNS = ("file", "sample_id", "split", "label", "answers", "simulated_answers", "agreement", "device_id",
           "model_version", "received_at", "labelled_at")


@dataclass(frozen=True)
class ExportSettings:
    """What to export: the class names to write, the hub's held-out split, and the least agreement a label needs."""

    classes: tuple[str, ...]
    holdout_share: float
    seed: int = 0
    min_agreement: float = 0.0

    @classmethod
    def of_hub(cls, config: HubConfig, min_agreement: float = 0.0) -> ExportSettings:
        """The names people answer in (`people_class_names`) and the retrain's held-out split."""
        if not 0.0 <= min_agreement <= 1.0:
            raise ExportError(f"min_agreement must be in [0, 1], got {min_agreement}")
        return cls(people_class_names(config), config.retrain.holdout_share, config.retrain.seed, min_agreement)


@dataclass(frozen=True)
class ExportReport:
    """What was written where, and what was left out and why."""

    folder: Path
    data_format: str
    model: str
    written: dict[str, int]  # split -> images
    skipped: dict[str, int]  # reason -> samples left out
    simulated: int  # images whose label has at least one SIMULATED answer
    notes: tuple[str, ...] = field(default=())

    @property
    def dataset(self) -> str:
        """The hgen-compile dataset spec that reads the folder back."""
        return f"{self.data_format}:{self.folder}"


def export_labels(kb: KnowledgeBase, model: str, out: Path, settings: ExportSettings,
                  stopped: Callable[[], bool] = lambda: False) -> ExportReport:
    """Write the human labels of `model` (a bundle name devices report) under `out` in its label form's layout.
    `stopped` is asked before each label: True ends the export (ExportError), nothing left behind (the hub's
    background export when the hub stops)."""
    out = Path(out).absolute()
    _refuse_taken(out)
    if (missing := kb.image_dir_missing()) is not None:
        raise ExportError(f"knowledge_base.image_dir {missing} is not a folder here, and samples' images are files "
                          "in it: run the export where the hub's images are (the same working folder, for a "
                          "relative path)")
    writer_type = EXPORTERS.get(label_form(kb, model))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
        partial.mkdir()  # the user's umask, as any folder they make
    except OSError as exc:
        raise ExportError(f"cannot write beside {out}: {exc.strerror or exc}") from None
    try:
        report = _write(kb, model, writer_type, partial, settings, stopped)
        os.rename(partial, out)  # onto an empty folder too; a folder filled meanwhile is refused
    except OSError as exc:  # a full disk, a folder filled meanwhile: said, and nothing left behind
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return replace(report, folder=out)


def _refuse_taken(out: Path) -> None:
    """`out` must be new, or an empty folder of its own (not a link, a mount point or the working folder: the
    finished export is renamed onto it, which those refuse only after it is all written)."""
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link: export into a new folder")
    if not out.exists():
        return
    if not out.is_dir() or any(out.iterdir()):
        raise ExportError(f"{out} exists: export into a new folder (an export never mixes with other files)")
    if os.path.ismount(out) or out == Path.cwd().absolute():
        raise ExportError(f"{out} is a mount point or the working folder: export into a new folder inside it")


def label_form(kb: KnowledgeBase, model: str) -> str:
    """The label form (the H-DNN kind's `label`) of `model`'s device samples; ExportError when it has none, or
    more than one."""
    with kb.session() as s:
        wire = s.scalars(select(Sample.hdnn_kind).where(Sample.bundle_name == model,
                                                        Sample.transport != GOLD_TRANSPORT).distinct()).all()
        if not wire:
            known = s.scalars(select(Sample.bundle_name).where(Sample.transport != GOLD_TRANSPORT).distinct()
                              .order_by(Sample.bundle_name).limit(20)).all()
            raise ExportError(f"no samples of model {model!r} in the knowledge base (models with samples: "
                              f"{', '.join(sorted(known)) or 'none'})")
    kinds = {kind for value in wire if (kind := kind_of_wire(value)) is not None}
    forms = {kind.label for kind in kinds}
    if len(forms) != 1:
        raise ExportError(f"model {model!r} has samples of kinds {sorted(k.name for k in kinds)}: one label form "
                          "per export")
    form = forms.pop()
    if form not in EXPORTERS:
        raise ExportError(f"model {model!r} is of kind {sorted(k.name for k in kinds)[0]}, whose people mark "
                          f"{form} without a class: no data layout holds them; class and box labels export")
    return form


def _write(kb: KnowledgeBase, model: str, writer_type: WriterType, root: Path,
           settings: ExportSettings, stopped: Callable[[], bool]) -> ExportReport:
    writer = writer_type(root, settings.classes)
    written: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    simulated = 0
    with (root / "samples.csv").open("w", newline="", encoding="utf-8") as index:
        rows = csv.writer(index)
        rows.writerow(COLUMNS)
        for row in _rows(kb, model, writer_type.selection()):
            if stopped():
                raise ExportError(f"the export of {model!r} was stopped (the hub is stopping); nothing written")
            reply = hub_pb2.SampleReply.FromString(row.payload)
            try:
                if reply.aggregated.confidence < settings.min_agreement:
                    raise SkipSample(f"agreement below {settings.min_agreement}")
                sample = ExportSample(row.id, _stem(row.id), _split(row.id, settings), _image(kb, row),
                                      row.class_id, row.payload, (row.width, row.height))
                path, label = writer.add(sample)
            except SkipSample as skip:
                skipped[skip.reason] += 1
                continue
            written[sample.split] += 1
            simulated += row.simulated > 0
            rows.writerow((path, row.id, sample.split, label, len(reply.answers), row.simulated,
                           f"{reply.aggregated.confidence:.4f}", row.device_id, row.bundle_version,
                           _when(row.received_at), _when(row.created_at)))
    if not written:
        raise ExportError(f"model {model!r} has no human labels to export"
                          f"{' (left out: ' + _reasons(skipped) + ')' if skipped else ''}")
    notes = writer.finish()
    _manifest(root, model, writer.data_format, settings, written, skipped, simulated, notes)
    return ExportReport(root, writer.data_format, model, dict(written), dict(skipped), simulated, tuple(notes))


def _rows(kb: KnowledgeBase, model: str, selection: tuple[Any, ...]) -> Iterator[Any]:
    """The model's human-labelled samples in sample id order, a page per query (keyset: each page after the last
    id read, on both tables: PostgreSQL merge-joins replies by its key, and bounded on samples alone it read that
    index from the start for every page), with how many of each one's answers were SIMULATED (the answer says so,
    or its annotator's account was registered as simulated)."""
    simulated = (select(func.count()).select_from(AnswerRow).join(Annotator, Annotator.id == AnswerRow.annotator_id)
                 .where(AnswerRow.sample_id == Sample.id,
                        or_(AnswerRow.simulated.is_(True), Annotator.kind == "simulated")).scalar_subquery())
    last = ""
    while True:
        query = (labelled_query(model, Sample.id, Sample.device_id, Sample.bundle_version, Sample.received_at,
                                Sample.image_format, Sample.height, Sample.width, Sample.channels, Sample.image_bytes,
                                Sample.image_path, Reply.class_id, Reply.payload, Reply.created_at,
                                simulated.label("simulated"))
                 .where(human_label(), *selection, Sample.id > last, Reply.sample_id > last)
                 .order_by(Sample.id).limit(PAGE))
        with kb.session() as s:
            page = s.execute(query).all()
        if not page:
            return
        yield from page
        last = page[-1].id


def _image(kb: KnowledgeBase, row: Any) -> ExportImage:
    """The picture as a file people's labels fit: SkipSample, by reason, when it is gone or cannot be written. A
    stored JPEG or PNG was decoded when the hub took it in (hgen.hub.validation.check_image): it is copied, and
    decoded again only when it must be turned upright."""
    if row.image_bytes == REMOVED_IMAGE and row.image_path is None:
        raise SkipSample("image removed by retention (knowledge_base.keep_labelled_images)")
    try:
        data = kb.images.get(row.image_bytes, row.image_path)
    except KnowledgeBaseError as exc:
        raise SkipSample(f"image file unreadable ({exc})") from None
    if row.image_format == hub_pb2.IMAGE_FORMAT_RAW_U8:
        channels = row.channels or 1
        if len(data) != row.height * row.width * channels or channels not in (1, 3, 4):
            raise SkipSample("raw image of the wrong size")
        return _png(np.frombuffer(data, np.uint8).reshape(row.height, row.width, channels))
    extension = EXTENSIONS.get(sniff(data))  # type: ignore[arg-type]
    if extension is None:
        raise SkipSample("image does not decode")
    if exif_orientation(data) == 1:
        return ExportImage(data, extension)
    pixels = decode_upright(data)  # stored sideways: written upright, as people saw it (not every tool reads EXIF)
    if pixels is None:
        raise SkipSample("image does not decode")
    return _png(pixels)


def _png(pixels: np.ndarray) -> ExportImage:
    ok, encoded = cv2.imencode(".png", pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    if not ok:
        raise SkipSample("image cannot be encoded as PNG")
    return ExportImage(encoded.tobytes(), ".png")


def _stem(sample_id: str) -> str:
    """The sample id as a file name; a digest of it for an id that is not a safe one (devices send UUIDs)."""
    return sample_id if SAFE_STEM.match(sample_id) else hashlib.sha256(sample_id.encode()).hexdigest()[:32]


def _split(sample_id: str, settings: ExportSettings) -> str:
    return "val" if held_out(sample_id, settings.holdout_share, settings.seed) else "train"


def _when(stamp: float | None) -> str:
    return "" if stamp is None or not math.isfinite(stamp) else time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                 time.gmtime(stamp))


def _reasons(skipped: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())


def _manifest(root: Path, model: str, data_format: str, settings: ExportSettings, written: Counter[str],
              skipped: Counter[str], simulated: int, notes: list[str]) -> None:
    manifest = {"model": model, "format": data_format, "dataset": f"{data_format}:<this folder>",
                "classes": list(settings.classes), "written": dict(written), "skipped": dict(skipped),
                "simulated_labels": simulated,
                "held_out": {"split": "val", "share": settings.holdout_share, "seed": settings.seed},
                "min_agreement": settings.min_agreement, "exported_at": _when(time.time()), "notes": notes}
    (root / "export.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
