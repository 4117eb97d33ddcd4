"""People who agree with each other far more than their agreement with everyone else allows: two accounts of one
person, or two people copying each other.

Why: majority voting and dawid_skene both count such a pair as two independent opinions, so where three people are
asked the pair outvotes the honest third whenever both are asked. dawid_skene sees it only through gold tasks (their
truths are pinned), and a hub with little gold sees nothing. Independent people agree about as often as their own
accuracies make them: A(x, y) ~ r_x * r_y (plus the rare errors that coincide). Each person's r is read off the
rest of the pool without the pair (r_x^2 ~ A(x, y) * A(x, z) / A(y, z) over other people y, z; the median over them,
so one other copying pair does not skew it), and a pair agreeing far above r_a * r_b, beyond chance, is shown to the
operator, who can compare their gold accuracy and pause one. A careless person does not make two careful ones look
alike (their agreement is what their accuracies predict), nor do hard frames (every pair agrees less alike).
Nothing is paused automatically: only a person can tell one person from two who learned together.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from sqlalchemy import select

from hgen.hub.kb.models import AnswerRow
from hgen.hub.kb.store import KnowledgeBase

WINDOW = 20_000  # the latest class answers read (one indexed read, tens of ms; enough for pools of dozens)
MIN_SHARED = 20  # samples two people must share before their agreement is judged, or used to judge others
ALPHA = 0.01  # chance of showing some independent pair at all, split over the pairs tested (Bonferroni)
EXCESS = 0.5  # shown only when they disagree on at most this share of what independence predicts


@dataclass(frozen=True)
class Pair:
    """Two people, how often they gave one class, and how often their accuracies say they would."""

    first: str
    second: str
    shared: int  # samples both answered with a class
    agreed: int  # of those, the same class
    expected: float  # agreement of two independent people as accurate as these two (read off the rest of the pool)
    p_value: float  # chance of `agreed` or more at `expected`

    @property
    def agreement(self) -> float:
        return self.agreed / self.shared if self.shared else 0.0


@dataclass(frozen=True)
class Together:
    """What the operator page shows: the pairs found, and how much was looked at."""

    pairs: tuple[Pair, ...]
    answers: int  # class answers read
    tested: int  # pairs with MIN_SHARED shared samples and enough of the pool beside them to judge


Counts = Mapping[tuple[str, str], tuple[int, int]]  # (first, second) sorted -> (shared, agreed)


def pair_counts(by_sample: Mapping[str, Mapping[str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    """For each pair of people: the samples both answered, and on how many they gave the same class."""
    shared: dict[tuple[str, str], int] = defaultdict(int)
    agreed: dict[tuple[str, str], int] = defaultdict(int)
    for answers in by_sample.values():
        for a, b in combinations(sorted(answers), 2):
            shared[a, b] += 1
            agreed[a, b] += answers[a] == answers[b]
    return {key: (n, agreed[key]) for key, n in shared.items()}


def find_pairs(by_sample: Mapping[str, Mapping[str, int]]) -> Together:
    """Pairs agreeing far beyond what their accuracies predict (see the module). A pair found is then left out of
    the others' accuracies (its agreement is not two accuracies' product), and the pairs judged again until the
    same pairs are found: one copying pair made two honest people beside it look too alike."""
    counts = pair_counts(by_sample)
    rates = {key: (agreed + 0.5) / (n + 1.0) for key, (n, agreed) in counts.items() if n >= MIN_SHARED}
    found: tuple[Pair, ...] = ()
    tested = 0
    for _ in range(len(rates) + 1):
        left_out = {(pair.first, pair.second) for pair in found}
        again, tested = judge(counts, {k: r for k, r in rates.items() if k not in left_out})
        if {(p.first, p.second) for p in again} == left_out:
            break
        found = again
    return Together(found, sum(len(a) for a in by_sample.values()), tested)


def judge(counts: Counts, rates: Mapping[tuple[str, str], float]) -> tuple[tuple[Pair, ...], int]:
    """The pairs whose agreement is beyond chance and far above r_a * r_b, and how many pairs could be judged."""
    judged = []
    for (a, b), (n, agreed) in counts.items():
        if n < MIN_SHARED:
            continue
        r_a, r_b = accuracy(a, b, rates), accuracy(b, a, rates)
        if r_a is not None and r_b is not None:
            judged.append(((a, b), n, agreed, min(r_a * r_b, 1.0)))
    found = []
    for (a, b), n, agreed, expected in judged:
        p = binomial_tail(agreed, n, expected)
        if p < ALPHA / len(judged) and (n - agreed) / n <= EXCESS * (1.0 - expected):
            found.append(Pair(a, b, n, agreed, expected, p))
    return tuple(sorted(found, key=lambda pair: pair.p_value)), len(judged)


def accuracy(who: str, partner: str, rates: Mapping[tuple[str, str], float]) -> float | None:
    """`who`'s accuracy read off the pool without `partner`: the median over other people y, z of
    sqrt(A(who, y) * A(who, z) / A(y, z)); None with fewer than two such people sharing enough samples."""
    def rate(x: str, y: str) -> float | None:
        return rates.get((x, y) if x < y else (y, x))

    others = sorted({y for key in rates if who in key for y in key} - {who, partner})  # sharing enough with who
    estimates = []
    for y, z in combinations(others, 2):
        a_y, a_z, a_yz = rate(who, y), rate(who, z), rate(y, z)
        if a_y is not None and a_z is not None and a_yz is not None:
            estimates.append(math.sqrt(a_y * a_z / a_yz))
    return min(statistics.median(estimates), 1.0) if estimates else None


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n is at most a few thousand)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def grouped(rows: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """(sample, annotator, class) rows -> each sample's classes by annotator."""
    by_sample: dict[str, dict[str, int]] = defaultdict(dict)
    for sample_id, annotator_id, class_id in rows:
        by_sample[sample_id][annotator_id] = class_id
    return by_sample


def answering_together(kb: KnowledgeBase, window: int | None = None) -> Together:
    """`find_pairs` over the hub's latest `window` (WINDOW) class answers (the primary key's order, newest first):
    the operator page's read is bounded, however long the history (0.05-0.12 s for 20,000 answers on SQLite)."""
    window = WINDOW if window is None else window
    with kb.session() as s:
        rows = s.execute(select(AnswerRow.sample_id, AnswerRow.annotator_id, AnswerRow.class_id)
                         .where(AnswerRow.class_id.is_not(None))
                         .order_by(AnswerRow.id.desc()).limit(window)).all()
    return find_pairs(grouped((str(s), str(a), int(c)) for s, a, c in rows))
