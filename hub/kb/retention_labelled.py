"""Retention of answered images: with `knowledge_base.keep_labelled_images` = N > 0, the images of the newest N human
labels of each model that retraining reads are kept, and those of the model's older answered samples emptied; the
rows and replies stay. 0 (the default) keeps them all.

Why: a retrain reads at most the newest `retrain.max_labels` labels of its model (hgen.hub.retrain.records), so on
a hub running for months the older answered images were never read again, yet filled the disk for good. The hub
config refuses N < retrain.max_labels while retraining is enabled (hgen.hub.config), so no retrain misses an image.

Which samples, per model (bundle name), in retraining's own terms (`of_model`, `human_label`, imported from
hgen.hub.retrain.records so the two cannot drift apart): device samples only (gold ones are never touched), newest
first by reply time (a sample's closed_at, written with its reply). A round finds, per model, the closing time of
the N-th newest label that still holds its image, counted among labels up to the cutoff of the model's queued or
running retrain if any (a run under way keeps every image it may read), and empties every answered or partial
sample of that model closed before it: labels, partial answers that made none, a paused annotator's. Those are
older than N labels, and a retrain reads the newest max_labels <= N of a set with at least N labels that new:
resuming a paused annotator only adds labels, so it reads none older either. Pausing one takes their labels out,
and a retrain may then reach older, emptied images: left out, as below (N above max_labels leaves room for it).

Who else reads an answered sample's image, and why an emptied one (b"", no path) is harmless:
- retraining (records.labelled_rows -> data.decode_many): an empty image is left out of the retrain, not a failure;
  the held-out field set (field.py, judge.py) and a re-search (research.py) take the images that read decoded.
- gold tasks (hgen.hub.gold) are transport 'gold': never emptied.
- annotators (hgen.hub.kb.tasks, the web UI) are shown open samples' tasks only; a closed sample has none open.
- a re-sent sample is answered from its stored reply (a duplicate), its image unread; the operator page reads none.

Batches, locks and counters are hgen.hub.kb.retention's (`empty_images`, `RetentionRounds`): one transaction per
batch, rows locked SKIP LOCKED, files deleted after the commit; `images_removed`, `image_bytes_freed`,
`image_remove_failed`. Every query reads ix_samples_labelled_images (migration 0017): a round walks each model's
newest N and its oldest batch, never the whole table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, TextClause, func, select, text

from hgen.hub.kb import models
from hgen.hub.kb.models import Reply, RetrainRun, Sample
from hgen.hub.kb.retention import BATCH, Removal, RetentionRounds, Round
from hgen.hub.kb.store import KnowledgeBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """A model's answered samples whose images a round empties: those closed before `closed_before`."""

    model: str
    closed_before: float
    due: int


def labelled_images(kb: KnowledgeBase) -> TextClause:
    """The index's predicate, inline (ix_samples_labelled_images: the planner takes it only so), its columns
    qualified (a query joins replies); SQLite matches a partial index by column, not by how it is written."""
    predicate = models.labelled_images("samples.")
    return text("+" + predicate if kb.engine.dialect.name == "sqlite" else predicate)


def models_with_images(kb: KnowledgeBase) -> list[str]:
    """The models (bundle names) with answered device samples that hold an image: one index step per model."""
    names: list[str] = []
    with kb.session() as s:
        while True:
            query = select(Sample.bundle_name).where(labelled_images(kb)).order_by(Sample.bundle_name).limit(1)
            if names:
                query = query.where(Sample.bundle_name > names[-1])
            name = s.scalar(query)
            if name is None:
                return names
            names.append(name)


def oldest_kept(kb: KnowledgeBase, model: str, keep: int) -> float | None:
    """When the `keep`-th newest label of `model` that retraining reads and that holds an image closed, among
    labels up to the cutoff of the model's queued or running retrain, if any; None when it has fewer."""
    from hgen.hub.retrain.records import ACTIVE_STATES, human_label, of_model  # its package imports the pipeline

    with kb.session() as s:
        anchor = s.scalar(select(func.min(RetrainRun.cutoff)).where(RetrainRun.model_name == model,
                                                                    RetrainRun.status.in_(ACTIVE_STATES)))
        query = (select(Sample.closed_at).join(Reply, Reply.sample_id == Sample.id)
                 .where(labelled_images(kb), *of_model(model), human_label())
                 .order_by(Sample.closed_at.desc()).offset(keep - 1).limit(1))
        if anchor is not None:
            query = query.where(Sample.closed_at <= anchor)
        found = s.scalar(query)
    return None if found is None else float(found)


def _terms(kb: KnowledgeBase, model: str, closed_before: float) -> list[ColumnElement[bool]]:
    """A model's answered samples closed before `closed_before` that hold an image (a hub without `image_dir`
    leaves a file's row to a hub that can delete the file)."""
    terms: list[ColumnElement[bool]] = [labelled_images(kb),  # type: ignore[list-item]
                                        Sample.bundle_name == model, Sample.closed_at < closed_before]
    if kb.images.image_dir is None:
        terms.append(Sample.image_path.is_(None))
    return terms


def due_scopes(kb: KnowledgeBase, keep: int) -> list[Scope]:
    """Each model with images to empty now, and how many (an index count)."""
    scopes = []
    for model in models_with_images(kb):
        closed_before = oldest_kept(kb, model, keep)
        if closed_before is None:
            continue
        with kb.session() as s:
            due = int(s.scalar(select(func.count()).select_from(Sample)
                               .where(*_terms(kb, model, closed_before))) or 0)
        if due:
            scopes.append(Scope(model, closed_before, due))
    return scopes


def remove_labelled_images(kb: KnowledgeBase, scope: Scope, limit: int = BATCH) -> Removal:
    """Empty the images of up to `limit` of the scope's samples, oldest first, in one transaction; then delete
    their files."""
    return kb.empty_images(_terms(kb, scope.model, scope.closed_before), labelled_images(kb), limit,
                           "answered samples")


class LabelledImageRetention(RetentionRounds):
    """The rounds of `knowledge_base.keep_labelled_images`: a round fixes each model's boundary at its start (so it
    removes what it said) and goes through the models one batch per turn of the deadline loop."""

    def __init__(self, kb: KnowledgeBase, keep: int, count: Callable[[str, int], None],
                 clock: Callable[[], float] = time.time, *, batch: int = BATCH) -> None:
        super().__init__(count, clock, batch)
        self.kb = kb
        self.keep = keep

    @property
    def enabled(self) -> bool:
        return self.keep > 0

    def _start(self, now: float) -> Round | None:
        scopes = due_scopes(self.kb, self.keep)
        if not scopes:
            return None
        due = sum(scope.due for scope in scopes)
        if due > self.batch:
            log.info("retention: removing the images of %d answered sample(s) of %d model(s), older than the newest "
                     "%d human labels of each (knowledge_base.keep_labelled_images; rows and replies kept), %d per "
                     "turn of the deadline loop", due, len(scopes), self.keep, self.batch)
        return Round(scopes)

    def _remove(self, current: Round) -> Removal:
        scopes: list[Scope] = current.target
        removal = remove_labelled_images(self.kb, scopes[0], self.batch)
        if not removal.more:
            scopes.pop(0)
        return replace(removal, more=bool(scopes))

    def _report(self, total: Removal) -> None:
        if total.images:
            log.info("retention: removed the images of %d answered sample(s) older than the newest %d human labels "
                     "of their model (knowledge_base.keep_labelled_images; %.1f MiB freed; rows and replies kept)",
                     total.images, self.keep, total.bytes_freed / 2**20)
