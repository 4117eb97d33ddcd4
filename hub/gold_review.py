"""Reviewing gold tasks: which known answers people dispute, and retiring a wrong one.

A gold task with a wrong known class pauses the careful people who answer it right, and feeds dawid_skene a wrong
truth. Before this module, one stored could not be taken back: `add-gold` refuses a picture already gold under
another class. `gold_standings` ranks gold tasks by how many people gave another class; `retire_gold` takes some
out of the gold set (their past answers stop counting, open copies are withdrawn) and resumes the people given them
whom the gold rule paused and would not pause now. The picture can then be added again under its right class. A
retired gold task keeps its sample row (transport `gold`, so no queue, export or retention touches it), its answers
and its picture, for the record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hgen.hub.errors import InvalidRequestError
from hgen.hub.gold import GOLD_PAUSE_REASON, GoldBook, GoldRating, gold_ratings, lock_annotator
from hgen.hub.kb.conflicts import retry_conflicts
from hgen.hub.kb.guards import WITHDRAWN, give_back, in_lock_order, lock_sample
from hgen.hub.kb.models import AnnotatorPause, AnswerRow, Assignment, GoldItem, Sample
from hgen.hub.kb.tasks import GOLD_TRANSPORT

MIN_DISPUTED = 3  # people who answered before a gold task's dispute is shown as such: one slip is not a dispute
MAX_RETIRE = 1000  # sample ids in one retire call


@dataclass(frozen=True)
class GoldStanding:
    """One gold task as people answered it, each person once (their latest answer: a repeat is the same opinion
    again, and one person answering three times is no dispute): how many people, how many gave its known class,
    and the other class given most (None when nobody gave another)."""

    sample_id: str
    class_id: int
    created_at: float
    people: int
    agreeing: int
    other_class: int | None
    other_count: int

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.people if self.people else None

    @property
    def disputed(self) -> bool:
        """Enough people answered, and more of them gave one other class than gave the known one: the known class
        is more likely wrong than they are."""
        return self.people >= MIN_DISPUTED and self.other_count > self.agreeing


def gold_standings(s: Session, limit: int | None = None) -> list[GoldStanding]:
    """Every gold task (or the first `limit`), disputed ones first, then by how many more people gave the other
    class than the known one: a wrong gold 36 people of 40 disputed ranks above a one-answer slip. Grouped in the
    database; the rows are (gold task, class) pairs, whatever the number of answers."""
    items = s.execute(select(GoldItem.sample_id, GoldItem.class_id, GoldItem.created_at)).all()
    latest = (select(func.max(AnswerRow.id))
              .where(AnswerRow.sample_id.in_(select(GoldItem.sample_id)), AnswerRow.class_id.is_not(None))
              .group_by(AnswerRow.sample_id, AnswerRow.annotator_id))
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for sample_id, class_id, n in s.execute(select(AnswerRow.sample_id, AnswerRow.class_id, func.count())
                                            .where(AnswerRow.id.in_(latest))
                                            .group_by(AnswerRow.sample_id, AnswerRow.class_id)).all():
        counts[sample_id][int(class_id)] += int(n)
    standings = [_standing(sample_id, int(class_id), created_at, counts[sample_id])
                 for sample_id, class_id, created_at in items]
    standings.sort(key=lambda g: (not g.disputed, g.agreeing - g.other_count,
                                  g.agreement if g.agreement is not None else 2.0, -g.people, g.sample_id))
    return standings if limit is None else standings[:limit]


def _standing(sample_id: str, class_id: int, created_at: float, given: Counter[int]) -> GoldStanding:
    others = [(n, c) for c, n in given.items() if c != class_id]
    other_count, other_class = max(others, key=lambda nc: (nc[0], -nc[1])) if others else (0, None)
    return GoldStanding(sample_id, class_id, float(created_at), sum(given.values()), given.get(class_id, 0),
                        other_class, other_count)


@dataclass(frozen=True)
class RetireReport:
    """What a retire did: the gold tasks retired now, those retired before (their people checked again), open
    copies withdrawn, people resumed (their rating now), and people still paused by gold (still below the bar)."""

    retired: tuple[str, ...]
    already_retired: tuple[str, ...]
    withdrawn: int
    resumed: tuple[GoldRating, ...]
    still_paused: tuple[GoldRating, ...]


def retire_gold(book: GoldBook, sample_ids: Sequence[str]) -> RetireReport:
    """Take gold tasks out of the gold set, all or none: an id that is not a gold task refuses the whole call, so a
    typo does not retire half a list. Then everyone given one of them whom the gold rule paused is rated again,
    and resumed when the rule would not pause them now; an operator's pause, and people who never met these gold
    tasks, are left alone. Run again on the same ids, it retires nothing and checks those people again (a resume
    step cut short by a crash is finished)."""
    wanted = tuple(dict.fromkeys(sample_ids))
    if not wanted:
        raise InvalidRequestError("no gold task given to retire")
    if len(wanted) > MAX_RETIRE:
        raise InvalidRequestError(f"at most {MAX_RETIRE} gold tasks in one call, got {len(wanted)}")
    retired, withdrawn = _retire(book, wanted)
    resumed, still = [], []
    for who in _given_to(book, wanted):
        rating, done = _resume_if_cleared(book, who)
        if done:
            resumed.append(rating)
        elif rating is not None:
            still.append(rating)
    already = tuple(sample_id for sample_id in wanted if sample_id not in retired)
    return RetireReport(retired, already, withdrawn, tuple(resumed), tuple(still))


@retry_conflicts
def _retire(book: GoldBook, sample_ids: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """Delete the gold rows and withdraw open copies, each sample locked (GoldBook.assign locks it too, so none is
    given once retired). Returns the ids retired now and the copies withdrawn."""
    with book.kb.session() as s:
        gold = set(s.scalars(select(Sample.id).where(Sample.id.in_(sample_ids), Sample.transport == GOLD_TRANSPORT)))
        missing = [sample_id for sample_id in sample_ids if sample_id not in gold]
        if missing:
            shown = ", ".join(repr(m[:64]) for m in missing[:5])
            raise InvalidRequestError(f"not a gold task: {shown}{' ...' if len(missing) > 5 else ''}; none retired")
        for sample_id in sorted(sample_ids):  # one lock order for every transaction locking several samples
            lock_sample(s, sample_id)
        live = set(s.scalars(select(GoldItem.sample_id).where(GoldItem.sample_id.in_(sample_ids))))
        s.execute(delete(GoldItem).where(GoldItem.sample_id.in_(sample_ids)))
        held = s.execute(select(Assignment.id, Assignment.sample_id)
                         .where(Assignment.sample_id.in_(sample_ids), Assignment.status == "open")).all()
        withdrawn = sum(give_back(s, task_id, sample_id, WITHDRAWN) for task_id, sample_id in in_lock_order(held))
    return tuple(sample_id for sample_id in sample_ids if sample_id in live), withdrawn


def _given_to(book: GoldBook, sample_ids: tuple[str, ...]) -> list[str]:
    """Everyone these gold tasks were given to: only their ratings changed."""
    with book.kb.session() as s:
        return sorted(set(s.scalars(select(Assignment.annotator_id).where(Assignment.sample_id.in_(sample_ids)))))


@retry_conflicts
def _resume_if_cleared(book: GoldBook, annotator_id: str) -> tuple[GoldRating | None, bool]:
    """Under the annotator's row lock (the rule's pause and an operator's take it too): when the gold rule paused
    them and would not now, the pause goes. (None, False) when not paused by the rule."""
    with book.kb.session() as s:
        lock_annotator(s, annotator_id)
        pause = s.get(AnnotatorPause, annotator_id)
        if pause is None or not pause.reason.startswith(GOLD_PAUSE_REASON):
            return None, False
        rating = gold_ratings(s, annotator_id).get(annotator_id) or GoldRating(annotator_id, 0, 0, pause.reason)
        if book.would_pause(rating):
            return rating, False
        s.delete(pause)
    return rating, True
