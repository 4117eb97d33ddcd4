"""Reviewing gold tasks: which known answers people dispute, and retiring a wrong one.

A gold task with a wrong known class pauses the careful people who answer it right, and feeds dawid_skene a wrong
truth. Before this module, one stored could not be taken back: `add-gold` refuses a picture already gold under
another class. `gold_standings` ranks gold tasks by how often people gave another class; `retire_gold` takes some
out of the gold set (their past answers stop counting, open copies are withdrawn) and resumes the people paused by
gold whom the rule would not pause now. The picture can then be added again under its right class.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hgen.hub.errors import InvalidRequestError
from hgen.hub.gold import GOLD_PAUSE_REASON, GoldBook, GoldRating, gold_ratings
from hgen.hub.kb.conflicts import retry_conflicts
from hgen.hub.kb.guards import WITHDRAWN, give_back, in_lock_order
from hgen.hub.kb.models import AnnotatorPause, AnswerRow, Assignment, GoldItem

MIN_DISPUTED = 3  # class answers before a gold task's dispute is shown as such: one slip is not a dispute
MAX_RETIRE = 1000  # sample ids in one retire call


@dataclass(frozen=True)
class GoldStanding:
    """One gold task as people answered it: how many class answers, how many gave its known class, and the other
    class given most (None when nobody gave another)."""

    sample_id: str
    class_id: int
    created_at: float
    answers: int
    agreeing: int
    other_class: int | None
    other_count: int

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.answers if self.answers else None

    @property
    def disputed(self) -> bool:
        """Enough people answered, and another class was given more often than the known one: the known class is
        more likely wrong than the people."""
        return self.answers >= MIN_DISPUTED and self.other_count > self.agreeing


def gold_standings(s: Session, limit: int | None = None) -> list[GoldStanding]:
    """Every gold task (or the `limit` most disputed), most disputed first: the lowest share of people agreeing
    with the known class, then the most answers. Grouped in the database by (sample, class)."""
    items = s.execute(select(GoldItem.sample_id, GoldItem.class_id, GoldItem.created_at)).all()
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    rows = s.execute(select(AnswerRow.sample_id, AnswerRow.class_id, func.count())
                     .where(AnswerRow.sample_id.in_(select(GoldItem.sample_id)), AnswerRow.class_id.is_not(None))
                     .group_by(AnswerRow.sample_id, AnswerRow.class_id)).all()
    for sample_id, class_id, n in rows:
        counts[sample_id][int(class_id)] += int(n)
    standings = [_standing(sample_id, int(class_id), created_at, counts[sample_id])
                 for sample_id, class_id, created_at in items]
    standings.sort(key=lambda g: (g.agreement if g.agreement is not None else 2.0, -g.answers, g.sample_id))
    return standings if limit is None else standings[:limit]


def _standing(sample_id: str, class_id: int, created_at: float, given: Counter[int]) -> GoldStanding:
    others = [(n, c) for c, n in given.items() if c != class_id]
    other_count, other_class = max(others, key=lambda nc: (nc[0], -nc[1])) if others else (0, None)
    return GoldStanding(sample_id, class_id, float(created_at), sum(given.values()), given.get(class_id, 0),
                        other_class, other_count)


@dataclass(frozen=True)
class RetireReport:
    """What a retire did: the gold tasks retired, open copies withdrawn, people resumed (their rating now), and
    people still paused by gold (their rating still below the bar)."""

    retired: tuple[str, ...]
    withdrawn: int
    resumed: tuple[GoldRating, ...]
    still_paused: tuple[GoldRating, ...]


def retire_gold(book: GoldBook, sample_ids: Sequence[str]) -> RetireReport:
    """Take gold tasks out of the gold set, all or none: an id that is not a gold task refuses the whole call, so a
    typo does not retire half a list. Then resume those paused by gold whom the pause rule would not pause now."""
    wanted = tuple(dict.fromkeys(sample_ids))
    if not wanted:
        raise InvalidRequestError("no gold task given to retire")
    if len(wanted) > MAX_RETIRE:
        raise InvalidRequestError(f"at most {MAX_RETIRE} gold tasks in one call, got {len(wanted)}")
    withdrawn = _retire(book, wanted)
    resumed, still = [], []
    for rating in _paused_by_gold(book):
        if book.would_pause(rating):
            still.append(rating)
        else:
            book.resume(rating.annotator_id)
            resumed.append(rating)
    return RetireReport(wanted, withdrawn, tuple(resumed), tuple(still))


@retry_conflicts
def _retire(book: GoldBook, sample_ids: tuple[str, ...]) -> int:
    with book.kb.session() as s:
        known = set(s.scalars(select(GoldItem.sample_id).where(GoldItem.sample_id.in_(sample_ids))))
        missing = [sample_id for sample_id in sample_ids if sample_id not in known]
        if missing:
            shown = ", ".join(repr(m[:64]) for m in missing[:5])
            raise InvalidRequestError(f"not a gold task: {shown}{' ...' if len(missing) > 5 else ''}; none retired")
        s.execute(delete(GoldItem).where(GoldItem.sample_id.in_(sample_ids)))
        held = s.execute(select(Assignment.id, Assignment.sample_id)
                         .where(Assignment.sample_id.in_(sample_ids), Assignment.status == "open")).all()
        return sum(give_back(s, task_id, sample_id, WITHDRAWN) for task_id, sample_id in in_lock_order(held))


def _paused_by_gold(book: GoldBook) -> list[GoldRating]:
    """The ratings, after the retire, of the people whom the gold rule paused (an operator's pause is left alone)."""
    with book.kb.session() as s:
        paused = set(s.scalars(select(AnnotatorPause.annotator_id)
                               .where(AnnotatorPause.reason.startswith(GOLD_PAUSE_REASON))))
        ratings = gold_ratings(s)
    return [ratings[who] for who in sorted(paused) if who in ratings]
