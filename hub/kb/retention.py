"""Retention: the images of samples that closed with no human label are removed after
`knowledge_base.keep_unlabelled_images_days`; the rows stay.

Which samples: those that expired, i.e. closed at their deadline with no answer at all (nobody took them, everyone
skipped or could not tell, tasks timed out). An answered or partial sample holds people's answers: its image is
training data (hgen.hub.retrain.records reads answered and partial replies, a paused annotator's too once they are
resumed) and is never touched; nor are open or set-aside samples, nor gold ones. Retraining, gold tasks and the
annotator UI read no expired sample's image, and the operator page reads none at all.

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
from dataclasses import dataclass

from sqlalchemy import func, select, text, update

from hgen.hub.kb.models import EXPIRED_IMAGES, EXPIRED_IMAGES_SQLITE, Sample
from hgen.hub.kb.tasks import GOLD_TRANSPORT

log = logging.getLogger(__name__)
DAY_S = 86400.0
BATCH = 500  # images emptied per transaction: a large backlog never holds the write lock long
ROUND_BATCHES = 20  # batches per round; a backlog larger than that goes on at the service loop's next turn
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

    def remove_unlabelled_images(self, closed_before: float, limit: int = BATCH) -> Removal:
        """Empty the images of up to `limit` samples that expired unanswered at or before `closed_before`, oldest
        first, in one transaction; then delete their files. A hub without `image_dir` empties inline images only
        (a file's row is left to a hub that can delete the file)."""
        with_files = self.images.image_dir is not None  # type: ignore[attr-defined]
        sqlite = self.engine.dialect.name == "sqlite"  # type: ignore[attr-defined]
        expired_images = text(EXPIRED_IMAGES_SQLITE if sqlite else EXPIRED_IMAGES)  # the index's predicate, inline
        terms = [expired_images, Sample.closed_at <= closed_before, Sample.answer_count == 0,
                 Sample.transport != GOLD_TRANSPORT]
        if not with_files:
            terms.append(Sample.image_path.is_(None))
        with self.session() as s:  # type: ignore[attr-defined]
            rows = s.execute(select(Sample.id, Sample.image_path, func.length(Sample.image_bytes))
                             .where(*terms).order_by(Sample.closed_at).limit(limit)
                             .with_for_update(skip_locked=True)).all()
            if not rows:
                return Removal()
            emptied = set(s.scalars(
                update(Sample).where(Sample.id.in_([row[0] for row in rows]), expired_images)
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
            log.warning("%d image file(s) of expired samples could not be deleted and stay on disk, no longer "
                        "referenced (first: %s)", len(failed), failed[0])
        return Removal(len(emptied), freed, len(failed), more=len(rows) == limit)


class ImageRetention:
    """One hub process's retention rounds, run from the service's periodic loop (`run_if_due`): a round empties
    batches until none is full or ROUND_BATCHES were done; the next round comes ROUND_EVERY_S later, or at once
    while a backlog is left. Counts `images_removed`, `image_bytes_freed` (and `image_remove_failed`), and logs one
    line per round that removed something."""

    def __init__(self, kb: Retention, keep_days: float, count: Callable[[str, int], None],
                 clock: Callable[[], float] = time.time, *, batch: int = BATCH,
                 round_batches: int = ROUND_BATCHES) -> None:
        self.kb = kb
        self.keep_s = keep_days * DAY_S
        self.count = count
        self.clock = clock
        self.batch = batch
        self.round_batches = round_batches
        self._next = float("-inf")  # the first round at the first turn of the loop

    @property
    def enabled(self) -> bool:
        return self.keep_s > 0

    def run_if_due(self) -> bool:
        """Run a round when one is due; True when a backlog is left (the next round is due at once)."""
        now = self.clock()
        if not self.enabled or now < self._next:
            return False
        self._next = now + ROUND_EVERY_S  # also after a failure: the next try is a round later
        total = Removal()
        try:
            for _ in range(self.round_batches):
                total = total + self.kb.remove_unlabelled_images(now - self.keep_s, self.batch)
                if not total.more:
                    break
        finally:  # batches committed before a failure are counted too
            self._report(total)
        if total.more:
            self._next = now
        return total.more

    def _report(self, total: Removal) -> None:
        if total.images:
            self.count("images_removed", total.images)
            self.count("image_bytes_freed", total.bytes_freed)
            log.info("retention: removed the images of %d sample(s) that expired unanswered over %g day(s) ago "
                     "(%.1f MiB freed; rows and replies kept)%s", total.images, self.keep_s / DAY_S,
                     total.bytes_freed / 2**20, "; more are due" if total.more else "")
        if total.failed_files:
            self.count("image_remove_failed", total.failed_files)
