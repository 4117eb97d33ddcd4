"""Two people who give the same class on every sample both answered, where the rest of the pool often disagrees with
them: two accounts of one person, or two people copying each other.

Why: majority voting and dawid_skene both count such a pair as two independent opinions, so where three people are
asked the pair outvotes the honest third whenever both are asked. dawid_skene sees it only through gold tasks (their
truths are pinned), and a hub with little gold sees nothing.

Why so plain a rule: a statistical one (independent people agree about r_a * r_b, each r read off the rest of the
pool) was built first and accused honest people. Where wrong answers coincide (two classes, or a confusable sibling
class) careful people agree more than the product, and with people of unequal care their accuracies cannot be read
off the pool without knowing how errors coincide. Identical answers on `MIN_SHARED` samples are another matter:
independent people who each agree with every other person at most `MAX_POOL_AGREEMENT` of the time agree with each
other on at most about 95 % (two 97 %-accurate people among 90 % ones), and 0.95^100 is 0.6 %. Each is compared
with the other person it agrees with most, not the pool's mean, which careless people drag down (a review's pool of
four 99 % people and two spammers named honest pairs against the mean). What it cannot see: a pair that copies only
some answers. What it cannot tell apart: two near-perfect people among careless ones answer identically too; their
gold accuracy tells, and they do no harm. Nothing is paused automatically: the operator decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

from sqlalchemy import select

from hgen.hub.kb.models import AnswerRow
from hgen.hub.kb.store import KnowledgeBase

WINDOW = 20_000  # the latest class answers read (one indexed read, tens of ms; enough for pools of dozens)
MIN_SHARED = 100  # samples both answered, every one with the same class
MAX_POOL_AGREEMENT = 0.9  # each agrees with every other person at most this often (else careful people look alike)
MIN_OTHER_SHARED = 30  # samples shared with another person for that agreement to count


@dataclass(frozen=True)
class Pair:
    """Two people who gave the same class on all `shared` samples both answered, and how often each agrees with
    the other person (outside their identical group) it agrees with most."""

    first: str
    second: str
    shared: int
    first_with_others: float  # the first's agreement with the other person it agrees with most
    second_with_others: float


@dataclass(frozen=True)
class Together:
    """What the operator page shows: the pairs found, and how much was looked at."""

    pairs: tuple[Pair, ...]
    answers: int  # class answers read
    tested: int  # pairs with MIN_SHARED shared samples


def pair_counts(by_sample: Mapping[str, Mapping[str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    """For each pair of people (sorted names): the samples both answered, and on how many they gave one class."""
    shared: dict[tuple[str, str], int] = defaultdict(int)
    agreed: dict[tuple[str, str], int] = defaultdict(int)
    for answers in by_sample.values():
        for a, b in combinations(sorted(answers), 2):
            shared[a, b] += 1
            agreed[a, b] += answers[a] == answers[b]
    return {key: (n, agreed[key]) for key, n in shared.items()}


def with_others(counts: Mapping[tuple[str, str], tuple[int, int]], who: str, group: set[str]) -> float | None:
    """`who`'s agreement with the person outside `group` (its identical partners) it agrees with most, among those
    sharing MIN_OTHER_SHARED samples with it; None without one. The closest other, not the pool's mean: careful
    people among careless ones agree with each other, and would look alike against a mean the careless drag down."""
    rates = [same / n for (a, b), (n, same) in counts.items()
             if who in (a, b) and not ({a, b} - {who}) <= group and n >= MIN_OTHER_SHARED]
    return max(rates) if rates else None


def identical_groups(counts: Mapping[tuple[str, str], tuple[int, int]]) -> dict[str, set[str]]:
    """Each person with identical answers to someone on MIN_SHARED samples -> everyone linked to them so (three
    accounts of one person are one group: each would otherwise be another's closest other, agreeing 100 %)."""
    groups: dict[str, set[str]] = {}
    for (a, b), (n, agreed) in sorted(counts.items()):
        if n >= MIN_SHARED and agreed == n:
            merged = groups.get(a, {a}) | groups.get(b, {b})
            for person in merged:
                groups[person] = merged
    return groups


def find_pairs(by_sample: Mapping[str, Mapping[str, int]]) -> Together:
    """Pairs with identical answers on at least MIN_SHARED shared samples, each agreeing with every other person at
    most MAX_POOL_AGREEMENT of the time (see the module)."""
    counts = pair_counts(by_sample)
    groups = identical_groups(counts)
    found = []
    tested = 0
    for (a, b), (n, agreed) in sorted(counts.items()):
        if n < MIN_SHARED:
            continue
        tested += 1
        if agreed < n:
            continue
        rest_a, rest_b = with_others(counts, a, groups[a]), with_others(counts, b, groups[b])
        if rest_a is not None and rest_b is not None and max(rest_a, rest_b) <= MAX_POOL_AGREEMENT:
            found.append(Pair(a, b, n, rest_a, rest_b))
    return Together(tuple(found), sum(len(a) for a in by_sample.values()), tested)


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
