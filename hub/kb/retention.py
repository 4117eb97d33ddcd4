"""Retention: the images of samples that closed with no human label are removed after
`knowledge_base.keep_unlabelled_images_days`; the rows stay.

Which samples: those that expired, i.e. closed at their deadline with no answer at all (nobody took them, everyone
skipped or could not tell, tasks timed out). An answered or partial sample holds people's answers: its image is
training data (hgen.hub.retrain.records reads answered and partial replies, a paused annotator's too once they are
resumed) and is never touched here (with `knowledge_base.keep_labelled_images` set, hgen.hub.kb.retention_labelled
empties those older than the newest that retraining reads); nor are open or set-aside samples, nor gold ones.
Retraining, gold tasks and the annotator UI read no expired sample's image, and the operator page reads none.

What stays: the row (ids, model output, status, counts) and its reply, so a re-sent sample is still recognised and
answered from the knowledge base and the operator's counts do not change. The image becomes an empty blob with no
path, as a sample stored past its deadline has always had (hgen.hub.service); it reads as b"" without error, so the
unreadable-image logic (UnreadableSamples) never takes a removed image for a lost file.

Hub processes sharing a database: each batch is one transaction that locks its rows with SKIP LOCKED (PostgreSQL;
SQLite's immediate transactions queue instead), so two sweeps take disjoint batches and never wait on each other;
the UPDATE still re-checks that the image is there and says (RETURNING) which rows this sweep emptied, and only
their files are deleted, after the commit (a file already gone is no error). A crash between the commit and the
deletion leaves that batch's files on disk, unreferenced: space lost, nothing read wrongly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, TextClause, func, select, text, update

from hgen.hub.kb.models import EXPIRED_IMAGES, EXPIRED_IMAGES_SQLITE, Sample
from hgen.hub.kb.tasks import GOLD_TRANSPORT

log = logging.getLogger(__name__)
DAY_S = 86400.0
BATCH = 500  # images emptied per transaction, and per turn of the service loop: a large backlog never holds the
# write lock long, nor keeps the deadline sweep beside it waiting for more than one batch
ROUND_EVERY_S = 60.0  # between rounds once no backlog is left
REMOVED_IMAGE = b""  # what a removed image leaves inline


@dataclass(frozen=True)
class Removal:
    """What one batch (or round) removed: images, the bytes freed (inline lengths and file sizes), files whose
    deletion failed (their rows are emptied; the files stay as litter), and whether more may be due at once."""

    images: int = 0
    bytes_freed: int = 0
    failed_files: int = 0
    more: bool = False

    def __add__(self, other: Removal) -> Removal:
        return Removal(self.images + other.images, self.bytes_freed + other.bytes_freed,
                       self.failed_files + other.failed_files, other.more)


class Retention:
    """Mixin of `KnowledgeBase` (which provides `engine`, `session` and `images`)."""

    def _expired_images(self) -> TextClause:
        """The index's predicate, inline (ix_samples_expired_images: the planner takes it only so)."""
        sqlite = self.engine.dialect.name == "sqlite"  # type: ignore[attr-defined]
        return text(EXPIRED_IMAGES_SQLITE if sqlite else EXPIRED_IMAGES)

    def _unlabelled_images(self, closed_before: float) -> list[ColumnElement[bool]]:
        """The samples whose image retention removes: expired unanswered at or before `closed_before`, not gold,
        the image still there (a hub without `image_dir` leaves a file's row to a hub that can delete the file)."""
        terms = [self._expired_images(), Sample.closed_at <= closed_before, Sample.answer_count == 0,
                 Sample.transport != GOLD_TRANSPORT]
        if self.images.image_dir is None:  # type: ignore[attr-defined]
            terms.append(Sample.image_path.is_(None))
        return terms

    def count_unlabelled_images(self, closed_before: float) -> int:
        """How many images `remove_unlabelled_images` would remove in all, up to `closed_before` (an index count)."""
        with self.session() as s:  # type: ignore[attr-defined]
            return int(s.scalar(select(func.count()).select_from(Sample)
                                .where(*self._unlabelled_images(closed_before))) or 0)

    def remove_unlabelled_images(self, closed_before: float, limit: int = BATCH) -> Removal:
        """Empty the images of up to `limit` samples that expired unanswered at or before `closed_before`, oldest
        first, in one transaction; then delete their files. A hub without `image_dir` empties inline images only
        (a file's row is left to a hub that can delete the file)."""
        return self.empty_images(self._unlabelled_images(closed_before), self._expired_images(), limit,
                                 "expired samples")

    def empty_images(self, terms: list[ColumnElement[bool]], still: ColumnElement[bool] | TextClause, limit: int,
                     what: str) -> Removal:
        """Empty the images of up to `limit` samples meeting `terms`, oldest closed first, in one transaction that
        locks them (SKIP LOCKED: another hub's sweep takes other rows) and re-checks `still` (the image is there);
        then delete the files of the rows this transaction emptied (RETURNING). Shared with the retention of
        answered images (hgen.hub.kb.retention_labelled); `what` names the samples in the log."""
        with self.session() as s:  # type: ignore[attr-defined]
            rows = s.execute(select(Sample.id, Sample.image_path, func.length(Sample.image_bytes))
                             .where(*terms).order_by(Sample.closed_at).limit(limit)
                             .with_for_update(skip_locked=True)).all()
            if not rows:
                return Removal()
            emptied = set(s.scalars(
                update(Sample).where(Sample.id.in_([row[0] for row in rows]), still)
                .values(image_bytes=REMOVED_IMAGE, image_path=None).returning(Sample.id)
                .execution_options(synchronize_session=False)).all())
        freed, failed = 0, []
        for sample_id, path, length in rows:
            if sample_id not in emptied:
                continue  # another hub emptied it first
            freed += int(length or 0)
            if path is not None:
                try:
                    freed += self.images.remove(path)  # type: ignore[attr-defined]
                except OSError as exc:
                    failed.append(f"{path}: {exc.strerror or exc}")
        if failed:  # each file is tried once (its row no longer names it): said once per batch
            log.warning("%d image file(s) of %s could not be deleted and stay on disk, no longer referenced "
                        "(first: %s)", len(failed), what, failed[0])
        return Removal(len(emptied), freed, len(failed), more=len(rows) == limit)


class RetentionRounds:
    """One hub process's retention rounds, run from the service's periodic loop (`run_if_due`), one batch per call:
    a round starts by counting the images due (logged, so an operator sees why images go before any does) and
    empties one batch per turn of the loop until none is left; the next round comes ROUND_EVERY_S later.
    Emptying 20 batches (and deleting their files) at once kept the deadline sweep beside it, and the replies it
    sends, waiting for as long. Counts `images_removed`, `image_bytes_freed` (and `image_remove_failed`) per batch,
    and logs one line when a round that removed something ends. What a round removes is the subclass's."""

    def __init__(self, count: Callable[[str, int], None], clock: Callable[[], float], batch: int) -> None:
        self.count = count
        self.clock = clock
        self.batch = batch
        self._next = float("-inf")  # the first round at the first turn of the loop
        self._round: Round | None = None  # the round under way (a backlog), if any

    @property
    def enabled(self) -> bool:
        raise NotImplementedError

    def run_if_due(self) -> bool:
        """Empty one batch when a round is due or under way; True when a backlog is left (due at the next turn)."""
        now = self.clock()
        if not self.enabled or (self._round is None and now < self._next <= now + ROUND_EVERY_S):
            return False  # not due; a next round further off than a round's interval: the clock stepped back
        self._next = now + ROUND_EVERY_S  # also after a failure: the next try is a round later
        current, self._round = self._round, None  # a failure ends the round (counted and said as it stands)
        if current is None:
            current = self._start(now)
            if current is None:
                return False
        try:
            removal = self._remove(current)
        except Exception:
            self._report(current.total)  # the batches committed before the failure
            raise
        self._count(removal)
        current.total = current.total + removal
        if removal.more:
            self._round = current
            return True
        self._report(current.total)
        return False

    def _start(self, now: float) -> Round | None:
        """A new round; None when none is due."""
        raise NotImplementedError

    def _remove(self, current: Round) -> Removal:
        """One batch of the round; its `more`: whether the round has more to remove."""
        raise NotImplementedError

    def _report(self, total: Removal) -> None:
        raise NotImplementedError

    def _count(self, removal: Removal) -> None:
        if removal.images:
            self.count("images_removed", removal.images)
            self.count("image_bytes_freed", removal.bytes_freed)
        if removal.failed_files:
            self.count("image_remove_failed", removal.failed_files)


class ImageRetention(RetentionRounds):
    """The rounds of `knowledge_base.keep_unlabelled_images_days` (images of samples that expired unanswered)."""

    def __init__(self, kb: Retention, keep_days: float, count: Callable[[str, int], None],
                 clock: Callable[[], float] = time.time, *, batch: int = BATCH) -> None:
        super().__init__(count, clock, batch)
        self.kb = kb
        self.keep_s = keep_days * DAY_S

    @property
    def enabled(self) -> bool:
        return self.keep_s > 0

    def _start(self, now: float) -> Round | None:
        """One that takes more than a batch first says how many images it will remove (over many turns of the
        loop: after an upgrade, the whole backlog); the rest say it when done. Its cutoff is fixed at its start, so
        it removes what it said."""
        closed_before = now - self.keep_s
        due = self.kb.count_unlabelled_images(closed_before)
        if due == 0:
            return None
        if due > self.batch:
            log.info("retention: removing the images of %d sample(s) that expired unanswered over %g day(s) ago "
                     "(knowledge_base.keep_unlabelled_images_days; rows and replies kept), %d per turn of the "
                     "deadline loop", due, self.keep_s / DAY_S, self.batch)
        return Round(closed_before)

    def _remove(self, current: Round) -> Removal:
        return self.kb.remove_unlabelled_images(current.target, self.batch)

    def _report(self, total: Removal) -> None:
        if total.images:
            log.info("retention: removed the images of %d sample(s) that expired unanswered over %g day(s) ago "
                     "(%.1f MiB freed; rows and replies kept)", total.images, self.keep_s / DAY_S,
                     total.bytes_freed / 2**20)


@dataclass
class Round:
    """A retention round under way: what it removes (fixed at its start: a cutoff, or the scopes still to go) and
    its total so far."""

    target: Any
    total: Removal = field(default_factory=Removal)
