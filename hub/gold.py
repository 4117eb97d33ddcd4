"""Gold tasks: samples with a known answer, mixed into each annotator's stream to rate them (and pause the bad).

Gold samples are hub-owned rows of `samples` (device `hub-gold`, transport `gold`) that never close, so every
annotator can be given each of them once; `KnowledgeBase.assign_next` never hands them out, this module does,
at `gold.share` of each annotator's tasks (one at a random place in each run of 1/share tasks). An annotator with
at least `gold.min_answers` gold answers and an accuracy below `gold.pause_below` is paused: they get no tasks
until an operator resumes them (a pause also ends their web sessions). A gold sample carries decoy "model's
guesses", so its page looks like any device's task.

A gold task given back (skip / can't tell) or left to time out is owed: it does not count as the run's gold, so
another comes before the run ends, and it counts against the rating as a miss (gold is chosen to be clear; a cheat
who could tell gold from the rest would otherwise decline it unrated). Once an annotator has seen every gold sample,
the one they saw longest ago is given again (a repeat), so they stay checked however long they work.
"""

from __future__ import annotations

import math
import random
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from hgen.hub.aggregators import default_aggregator
from hgen.hub.config import GoldConfig, LimitsConfig
from hgen.hub.errors import InvalidRequestError, SampleImageMissingError
from hgen.hub.kb.conflicts import retry_conflicts
from hgen.hub.kb.guards import TIMED_OUT, WITHDRAWN, at_cap, lock_sample, withdraw_open_tasks
from hgen.hub.kb.models import Annotator, AnnotatorPause, AnswerRow, Assignment, Batch, GoldItem, Sample, WebAccount
from hgen.hub.kb.store import GOLD_TRANSPORT, KnowledgeBase, Task
from hgen.hub.kb.tasks import stored_image
from hgen.hub.validation import check_image
from hgen.protos import hub_pb2
from hgen.protos.kinds import wire_kind
from hgen.runtime.hdnn import DEFAULT_KIND, get_kind

GOLD_DEVICE = "hub-gold"
NEVER = 4102444800.0  # 2100-01-01: gold samples never reach a deadline
GOLD_SLOTS = 1_000_000_000  # m of a gold sample: it never closes
DECLINED = ("released", TIMED_OUT)  # gold given back (skip / can't tell) or left to time out: owed, and a miss
NOT_GIVEN = (*DECLINED, WITHDRAWN)  # taken back by a pause: owed too, but no miss of the annotator's


GOLD_PAUSE_REASON = "gold accuracy"  # how a pause by the gold rule starts: retiring a wrong gold may undo it
RECENT_SHAPES = 200  # the latest device samples a gold sample's guesses may borrow their shape from


def decoy_like(real: list[float] | None, num_classes: int, class_id: int, seed: int) -> list[float]:
    """Guesses shaped like a real sample's (`real`: one of the latest device samples' probabilities), on other
    classes: the same top value and spread, the top on the true class about half the time. Devices send people the
    frames their model doubts (under its tau), so an invented shape stood out: the top guess of half the gold pages
    showed over the demo's tau, which a device's doubted frame rarely does. Without a real sample of this many
    classes, `decoy_probabilities`."""
    if real is None or len(real) != num_classes:
        return decoy_probabilities(num_classes, class_id, seed)
    rng = random.Random(seed)
    values = sorted(real, reverse=True)
    favourite = class_id if rng.random() < 0.5 else rng.randrange(num_classes)
    others = [c for c in range(num_classes) if c != favourite]
    rng.shuffle(others)
    probabilities = [0.0] * num_classes
    for c, value in zip([favourite, *others], values):
        probabilities[c] = value
    return probabilities


def decoy_probabilities(num_classes: int, class_id: int, seed: int) -> list[float]:
    """A plausible unsure model's guesses for a gold sample, so a gold page looks like every other task: the
    true class is the top guess about half the time, as for a device's samples that needed people."""
    rng = random.Random(seed)
    weights = [rng.gammavariate(0.5, 1.0) + 1e-6 for _ in range(num_classes)]
    favourite = class_id if rng.random() < 0.5 else rng.randrange(num_classes)
    weights[favourite] = max(weights) * rng.uniform(1.2, 3.0)
    total = sum(weights)
    return [w / total for w in weights]


@dataclass(frozen=True)
class GoldRating:
    """An annotator's record on gold tasks and whether they are paused (and why)."""

    annotator_id: str
    correct: int
    answered: int
    paused_reason: str | None
    declined: int = 0  # gold tasks given back (skip / can't tell) or left to time out: each a miss

    @property
    def rated(self) -> int:
        return self.answered + self.declined

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.rated if self.rated else None


def gold_ratings(s: Session, annotator_id: str | None = None) -> dict[str, GoldRating]:
    """The gold ratings of every annotator (the operator page), or of one, grouped in the database. Answers are
    reached through the gold samples (`IN`, ix_answers_sample_id): joined, SQLite walked every answer in annotator
    order instead."""
    gold = select(GoldItem.sample_id)
    truth = select(GoldItem.class_id).where(GoldItem.sample_id == AnswerRow.sample_id).scalar_subquery()
    who_answered = (AnswerRow.annotator_id == annotator_id,) if annotator_id is not None else ()
    who_declined = (Assignment.annotator_id == annotator_id,) if annotator_id is not None else ()
    who_paused = (AnnotatorPause.annotator_id == annotator_id,) if annotator_id is not None else ()
    answered = s.execute(select(AnswerRow.annotator_id, func.count(),
                                func.sum(case((AnswerRow.class_id == truth, 1), else_=0)))
                         .where(AnswerRow.sample_id.in_(gold), *who_answered).group_by(AnswerRow.annotator_id)).all()
    declined = dict(s.execute(select(Assignment.annotator_id, func.count())
                              .where(Assignment.sample_id.in_(gold), Assignment.status.in_(DECLINED), *who_declined)
                              .group_by(Assignment.annotator_id)).all())
    paused = dict(s.execute(select(AnnotatorPause.annotator_id, AnnotatorPause.reason).where(*who_paused)).all())
    scores = {who: (int(n), int(correct or 0)) for who, n, correct in answered}
    return {who: GoldRating(who, scores.get(who, (0, 0))[1], scores.get(who, (0, 0))[0], paused.get(who),
                            int(declined.get(who, 0)))
            for who in scores.keys() | declined.keys() | paused.keys()}


def lock_annotator(s: Session, annotator_id: str) -> Annotator | None:
    """The annotator's row, locked until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
    writers): a pause, the gold rule's pause and a retire's resume of one person take turns."""
    query = select(Annotator).where(Annotator.id == annotator_id).with_for_update(key_share=True)
    return s.scalars(query.execution_options(populate_existing=True)).first()


class GoldBook:
    """Adds gold samples, hands them out at the configured share, scores answers and pauses annotators."""

    def __init__(self, kb: KnowledgeBase, config: GoldConfig, clock: Callable[[], float] = time.time, *,
                 aggregator: str | None = None, draw: Callable[[], float] = random.SystemRandom().random) -> None:
        """`aggregator`: the hub's configured one; a gold sample is stored with the aggregator a device's sample of
        the same kind would get (the kind's own when None), so nothing about it stands out. `draw`: uniform in
        [0, 1), where in each run of 1/share tasks the gold one falls."""
        self.kb = kb
        self.config = config
        self.clock = clock
        self.draw = draw
        self.kind = get_kind(DEFAULT_KIND)  # gold truth is a class: the default kind's (H-CNN's) label
        self.aggregator = default_aggregator(self.kind, aggregator) if aggregator else self.kind.aggregator

    # --- gold samples -----------------------------------------------------------------------------------------

    def recent_shapes(self, num_classes: int) -> list[list[float]]:
        """The probabilities of the latest device samples of this many classes (empty: none yet). A scan of the
        samples by time: an import of many gold pictures reads it once (`add(..., shapes=)`)."""
        with self.kb.session() as s:
            outputs = s.scalars(select(Sample.model_output).where(Sample.transport != GOLD_TRANSPORT)
                                .order_by(Sample.received_at.desc()).limit(RECENT_SHAPES)).all()
        return [list(p) for p in (hub_pb2.ModelOutput.FromString(o).class_probabilities for o in outputs)
                if len(p) == num_classes]

    def add(self, image: hub_pb2.Image, class_id: int, num_classes: int, limits: LimitsConfig,
            shapes: Sequence[list[float]] | None = None) -> str:
        """Store a gold sample (the image is checked like a device's); returns its sample id. `shapes`: the
        `recent_shapes` its guesses borrow one of (read here when None)."""
        if not 0 <= class_id < num_classes:
            raise InvalidRequestError(f"gold class must be in 0..{num_classes - 1}, got {class_id}")
        check_image(image, limits)
        self.kb.register_devices([GOLD_DEVICE])
        sample_id, now = str(uuid.uuid4()), self.clock()
        inline, path = self.kb.images.put(sample_id, image)
        shapes = self.recent_shapes(num_classes) if shapes is None else shapes
        real = random.SystemRandom().choice(shapes) if shapes else None
        probabilities = decoy_like(real, num_classes, class_id, secrets.randbits(64))
        output = hub_pb2.ModelOutput(kind=wire_kind(self.kind.name), confidence=max(probabilities),
                                     class_probabilities=probabilities)
        with self.kb.session() as s:
            s.add(Batch(id=sample_id, device_id=GOLD_DEVICE, m=GOLD_SLOTS, deadline=NEVER, labour_budget=0.0,
                        labour_reserved=0.0, created_at=now))
            s.flush()
            s.add(Sample(id=sample_id, batch_id=sample_id, device_id=GOLD_DEVICE, bundle_name="", bundle_version="",
                         captured_at=None, hdnn_kind=output.kind, image_format=image.format,
                         height=image.height, width=image.width, channels=image.channels, image_bytes=inline,
                         image_path=path, model_output=output.SerializeToString(), confidence=0.0, difficulty=1.0,
                         labour_reserved=0.0, m=GOLD_SLOTS, aggregator=self.aggregator, transport=GOLD_TRANSPORT,
                         status="received", assigned_count=0, answer_count=0, deadline=NEVER, received_at=now))
            s.flush()
            s.add(GoldItem(sample_id=sample_id, class_id=class_id, created_at=now))
        return sample_id

    def truth(self, sample_id: str) -> int | None:
        with self.kb.session() as s:
            item = s.get(GoldItem, sample_id)
            return item.class_id if item is not None else None

    def count(self) -> int:
        return self.kb.count(GoldItem)

    def image(self, sample_id: str) -> hub_pb2.Image | None:
        """A gold task's picture, for the operator judging it (None: not a gold task). SampleImageMissingError when
        its file is gone."""
        with self.kb.session() as s:
            row = s.scalars(select(Sample).join(GoldItem, GoldItem.sample_id == Sample.id)
                            .where(Sample.id == sample_id)).first()
            if row is None:
                return None
            return stored_image(row, self.kb.images.get(row.image_bytes, row.image_path))

    # --- handing out ------------------------------------------------------------------------------------------

    def due(self, annotator_id: str) -> bool:
        """Is the annotator's next task a gold one? One in each run of 1/share of their tasks, at a random place in
        the run: a fixed place (the first task, then every 1/share-th) told a careful cheat which tasks to answer
        well. A gold task given back does not count as the run's gold, so it is owed."""
        with self.kb.session() as s:
            if s.scalar(select(GoldItem.sample_id).limit(1)) is None:
                return False  # no gold defined: one cheap query per task
            total = s.scalar(select(func.count()).select_from(Assignment)
                             .where(Assignment.annotator_id == annotator_id)) or 0
            gold = s.scalar(select(func.count()).select_from(Assignment)  # by transport: a retired gold was gold
                            .join(Sample, Sample.id == Assignment.sample_id)  # when given (hgen.hub.gold_review)
                            .where(Assignment.annotator_id == annotator_id, Sample.transport == GOLD_TRANSPORT,
                                   Assignment.status.not_in(NOT_GIVEN))) or 0
        if gold >= math.ceil(self.config.share * (total + 1)):
            return False  # this run's gold was given
        left = max(1, math.ceil((gold + 1) / self.config.share - 1e-9) - total)  # tasks left in the run, this one too
        return self.draw() < 1.0 / left

    def assign(self, annotator_id: str, max_open: int | None = None) -> Task | None:
        """A gold sample this annotator has not seen yet; once they have seen them all, the one they were given
        longest ago, again (None when they hold it open, or hold `max_open` open tasks already, or the picked
        sample's image cannot be read: it is set aside like a device's, and a device sample goes out instead)."""
        now = self.clock()
        aside = self.kb.unreadable.current()
        sample_id = ""
        try:
            with self.kb.session() as s:
                if at_cap(s, annotator_id, max_open):
                    return None
                picked = self._unseen(s, annotator_id, aside) or self._longest_ago(s, annotator_id, aside)
                if picked is None:
                    return None
                sample_id, repeat_no = picked
                row = lock_sample(s, sample_id)  # a retire (hgen.hub.gold_review) locks it too: never given once
                if s.scalar(select(GoldItem.sample_id).where(GoldItem.sample_id == sample_id)) is None:
                    return None  # retired since it was picked
                data = self.kb.images.get(row.image_bytes, row.image_path)  # before the claim: nothing to undo
                row.assigned_count += 1
                task_id = str(uuid.uuid4())
                s.add(Assignment(id=task_id, sample_id=sample_id, annotator_id=annotator_id, status="open",
                                 assigned_at=now, repeat_no=repeat_no))
                return self.kb._task(s, task_id, row, annotator_id, data)  # noqa: SLF001 (one Task builder)
        except SampleImageMissingError as exc:
            self.kb.unreadable.set_aside(sample_id, str(exc))
            return None

    @staticmethod
    def _unseen(s: Session, annotator_id: str, aside: list[str]) -> tuple[str, int] | None:
        seen = select(Assignment.sample_id).where(Assignment.annotator_id == annotator_id)
        sample_id = s.scalars(select(GoldItem.sample_id).where(GoldItem.sample_id.not_in(seen),
                                                               GoldItem.sample_id.not_in(aside))
                              .order_by(func.random()).limit(1)).first()
        return (sample_id, 0) if sample_id is not None else None

    @staticmethod
    def _longest_ago(s: Session, annotator_id: str, aside: list[str]) -> tuple[str, int] | None:
        """The gold sample whose latest giving to the annotator is oldest, and its next repeat number; never one
        they hold open."""
        mine = (select(Assignment.sample_id, func.max(Assignment.assigned_at).label("last"),
                       func.max(Assignment.repeat_no).label("repeats"))
                .join(GoldItem, GoldItem.sample_id == Assignment.sample_id)
                .where(Assignment.annotator_id == annotator_id).group_by(Assignment.sample_id).subquery())
        held = select(Assignment.sample_id).where(Assignment.annotator_id == annotator_id, Assignment.status == "open")
        row = s.execute(select(mine.c.sample_id, mine.c.repeats).where(mine.c.sample_id.not_in(held),
                                                                       mine.c.sample_id.not_in(aside))
                        .order_by(mine.c.last, mine.c.sample_id).limit(1)).first()
        return (row.sample_id, row.repeats + 1) if row is not None else None

    # --- rating and pausing -----------------------------------------------------------------------------------

    def rating(self, annotator_id: str) -> GoldRating:
        with self.kb.session() as s:
            found = gold_ratings(s, annotator_id)
        return found.get(annotator_id) or GoldRating(annotator_id, 0, 0, None)

    def after_answer(self, annotator_id: str, sample_id: str) -> GoldRating | None:
        """Re-rate the annotator if `sample_id` was gold (answered or given back); pause them when their accuracy
        is too low."""
        if self.truth(sample_id) is None:
            return None
        return self.review(annotator_id)

    def review(self, annotator_id: str) -> GoldRating:
        """Rate the annotator and pause them when their accuracy is too low. Also run before a gold task is handed
        out: gold left to time out has no answer that would trigger it."""
        rating = self.rating(annotator_id)
        if rating.paused_reason is None and self.would_pause(rating):
            rating = self._pause_by_rule(annotator_id)
        return rating

    @retry_conflicts
    def _pause_by_rule(self, annotator_id: str) -> GoldRating:
        """Rated again under the annotator's row lock, as a retire's resume is: a gold retired between the first
        rating and this pause would leave a pause that no gold explains, and the retire would not see it."""
        with self.kb.session() as s:
            lock_annotator(s, annotator_id)
            rating = gold_ratings(s, annotator_id).get(annotator_id) or GoldRating(annotator_id, 0, 0, None)
            if rating.paused_reason is not None or not self.would_pause(rating):
                return rating
            given_back = f" ({rating.declined} not answered: given back or timed out)" if rating.declined else ""
            reason = (f"{GOLD_PAUSE_REASON} {rating.accuracy:.0%} on {rating.rated} gold tasks{given_back} is below "
                      f"{self.config.pause_below:.0%}")
            self._pause_in(s, annotator_id, reason)
        return GoldRating(annotator_id, rating.correct, rating.answered, reason, rating.declined)

    def would_pause(self, rating: GoldRating) -> bool:
        """The pause rule: enough gold rated, and accuracy below the bar."""
        accuracy = rating.accuracy
        return rating.rated >= self.config.min_answers and accuracy is not None and accuracy < self.config.pause_below

    @retry_conflicts
    def pause(self, annotator_id: str, reason: str) -> None:
        """Pause a known annotator, end every web session of theirs (they log in again to see why) and give their
        open tasks to others at once: held while they are paused, those samples would wait for the timeout."""
        with self.kb.session() as s:
            self._pause_in(s, annotator_id, reason)

    def _pause_in(self, s: Session, annotator_id: str, reason: str) -> None:
        if lock_annotator(s, annotator_id) is None:
            raise InvalidRequestError(f"no annotator {annotator_id[:64]!r}")
        s.merge(AnnotatorPause(annotator_id=annotator_id, reason=reason[:512], paused_at=self.clock()))
        s.execute(update(WebAccount).where(WebAccount.annotator_id == annotator_id)
                  .values(session_epoch=WebAccount.session_epoch + 1))
        withdraw_open_tasks(s, annotator_id)

    def resume(self, annotator_id: str) -> None:
        with self.kb.session() as s:
            if s.get(Annotator, annotator_id) is None:
                raise InvalidRequestError(f"no annotator {annotator_id[:64]!r}")
            pause = s.get(AnnotatorPause, annotator_id)
            if pause is not None:
                s.delete(pause)

    def paused_reason(self, annotator_id: str) -> str | None:
        with self.kb.session() as s:
            pause = s.get(AnnotatorPause, annotator_id)
            return pause.reason if pause is not None else None
