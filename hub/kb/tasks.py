"""Annotator tasks (part of the knowledge base): handing samples to people, held and open tasks, timeouts and
releases. Each transition is a conditional UPDATE, so hub processes sharing a database never assign a slot twice;
a task's transitions lock its sample first (hgen.hub.kb.guards), so two racing ones never both pass.

A sample whose image cannot be read is set aside while assigning (`KnowledgeBase.unreadable`: left out for a
minute, never closed for it) and the next one is handed out in the same request: left in the queue it was picked
first again by every request, and every annotator got a 500.

Hand-out is fair across devices: it goes round the devices with work (`fair_candidates`), each device's own
samples oldest first. Oldest-first across the hub let one device's 5,000 samples come before another device's 10,
which expired unanswered. Each device's oldest comes from the partial index ix_samples_open_device (open device
samples only), so the work grows with the devices, not with the open samples. The turn is kept in the database
(devices.last_served, migration 0015), so hub processes sharing it go round the devices together; kept per
process, each went round on its own and N processes handed out N samples of the device served last.

The wall clock stepping back (an NTP correction, a clock set right): a held task's timeout was counted from its
assignment time, which then lies in the clock's future, so the task stayed held for the step on top of its timeout
(an hour's step: an hour more, with nobody else able to take the slot). A task assigned further ahead of the clock
than CLOCK_SLACK_S (more than hub processes' clocks differ) was assigned before the clock stepped back: its timeout
starts again from now (`expire_assignments`), so it is held at most one timeout more. It is not timed out at once:
its holder may be answering it this moment, and would lose that answer. A forward step is taken as time that
passed (the hub cannot tell it from time it was down): held tasks older than the timeout go back to the queue."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.util import AliasedClass

from hgen.hub.errors import SampleImageMissingError, TaskClosedError, UnknownTaskError
from hgen.hub.kb.conflicts import retry_conflicts
from hgen.hub.kb.guards import (WITHDRAWN, at_cap, expire_assignments, give_back, open_task_ids, own_task,
                                withdraw_open_tasks)
from hgen.hub.kb.models import OPEN_STATES, Assignment, Device, Sample, TaskEvent
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
GOLD_TRANSPORT = "gold"  # gold tasks are hub-owned samples, handed out by hgen.hub.gold, never by assign_next
RELEASE_KINDS = ("skip", "cant_tell")
ASSIGN_ROUNDS = 4  # candidate lists tried per request while unreadable samples are met (bounds one request's work)
EMPTY_IMAGE = b""  # a Task read without its image (answers and skips need none)
# A time written this far ahead of the clock is another hub process's (clocks a little apart, as
# hgen.hub.kb.intake.AHEAD_MINUTES allows); one further ahead was written before the clock stepped back.
CLOCK_SLACK_S = 300.0
RESTARTS = 500  # held tasks whose timeout restarts per sweep (the rest at the next, a second later)


@dataclass(frozen=True)
class Task:
    """One sample assigned to one annotator: what the annotator UI (or the simulated crowd) is shown."""

    task_id: str
    sample_id: str
    annotator_id: str
    hdnn_kind: int
    image: hub_pb2.Image
    model_output: hub_pb2.ModelOutput
    deadline: float
    aggregator: str = ""  # the sample's aggregator: what its answers must be (for kinds without a descriptor here)


SampleTable = type[Sample] | AliasedClass[Sample]


def time_to_answer(now: float, min_time_s: float, sample: SampleTable = Sample) -> ColumnElement[bool]:
    """At least `min_time_s` left before the sample's deadline, or, for a device whose whole deadline is shorter
    than twice that, half of it: a device that waits 20 s for people must still be answered, not skipped."""
    window = sample.deadline - sample.received_at
    return or_(sample.deadline > now + min_time_s,
               and_(window < 2 * min_time_s, sample.deadline - now >= window / 2))


def device_work(sample: SampleTable = Sample) -> tuple[ColumnElement[bool], ...]:
    """Devices' samples still waiting for people (gold excluded): the predicate of ix_samples_open_device
    (models.OPEN_DEVICE_SAMPLES), its values written inline, as SQLite and PostgreSQL use a partial index only for
    a query whose WHERE visibly implies its predicate (a bound parameter does not)."""
    states = bindparam("open_states", list(OPEN_STATES), expanding=True, literal_execute=True, unique=True)
    return sample.status.in_(states), sample.transport != literal(GOLD_TRANSPORT, literal_execute=True)


def assignable(sample: SampleTable, annotator_id: str, now: float, min_time_s: float,
               aside: list[str]) -> tuple[ColumnElement[bool], ...]:
    """A device's sample this annotator may be handed now: open with a free slot, not seen by them, not set aside
    (its image unreadable lately), its deadline far enough off (`time_to_answer`)."""
    seen = select(Assignment.sample_id).where(Assignment.annotator_id == annotator_id)
    return (*device_work(sample), sample.assigned_count < sample.m, sample.deadline > now,
            time_to_answer(now, min_time_s, sample), sample.id.not_in(seen), sample.id.not_in(aside))


HEAD_OF = aliased(Sample, name="head_of")  # a device's oldest sample, beside its devices row (built once: costly)
TURNS = aliased(Device, name="turns")  # the devices read for the next turn, beside the row being updated


def serve(s: Session, device_id: str) -> None:
    """Give the device the next hand-out turn, max(last_served) + 1: a counter, not a clock (many hand-outs share a
    clock reading), shared by every hub process on the database. Two processes serving two devices at once may give
    them the same turn; they are then ordered by their samples' age, as fair as before."""
    turn = select(func.max(TURNS.last_served) + 1).scalar_subquery()
    s.execute(update(Device).where(Device.id == device_id).values(last_served=turn))


def fair_candidates(s: Session, terms: Callable[[SampleTable], tuple[ColumnElement[bool], ...]],
                    limit: int) -> list[str]:
    """Up to `limit` sample ids matching `terms` in fair order: each device's oldest, the device served longest ago
    first (never served: by the sample's age), before any device's second, and so on. A device's own samples go
    oldest first. Ordering by age alone came back to the flooding device after every answer (its oldest is the
    oldest), so hand-out goes round the devices.

    One statement takes each device's oldest (a step into ix_samples_open_device per registered device) and its turn
    (`serve`), a second reads those by primary key (a join of the two let PostgreSQL, before its first ANALYZE, scan
    every sample); only when fewer than `limit` devices have work are those few read further."""
    head = (select(HEAD_OF.id).where(HEAD_OF.device_id == Device.id, *terms(HEAD_OF))
            .order_by(HEAD_OF.received_at).limit(1).correlate(Device).scalar_subquery())
    devices = s.execute(select(head, Device.id, Device.last_served).select_from(Device)).all()
    turns = {device_id: int(turn or 0) for sample_id, device_id, turn in devices if sample_id is not None}
    if not turns:
        return []
    heads = [sample_id for sample_id, *_ in devices if sample_id is not None]
    rows = s.execute(select(Sample.device_id, Sample.received_at, Sample.id).where(Sample.id.in_(heads))).all()
    if len(rows) >= limit:
        return [row[2] for row in sorted(rows, key=lambda row: (turns[row[0]], row[1], row[2]))[:limit]]
    ranked: list[tuple[int, int, float, str]] = []
    for device_id in {row[0] for row in rows}:
        oldest = s.execute(select(Sample.received_at, Sample.id).where(Sample.device_id == device_id, *terms(Sample))
                           .order_by(Sample.received_at).limit(limit)).all()
        ranked += [(rank, turns[device_id], at, sample_id) for rank, (at, sample_id) in enumerate(oldest)]
    return [sample_id for *_, sample_id in sorted(ranked)[:limit]]


def stored_image(row: Sample, data: bytes) -> hub_pb2.Image:
    """A sample's picture as the hub took it in: its stored bytes with the format and size recorded beside them."""
    return hub_pb2.Image(format=row.image_format, height=row.height, width=row.width, channels=row.channels, data=data)


class TaskQueue:
    """Mixin of `KnowledgeBase` (which provides `session`, `clock`, `images` and `unreadable`)."""

    def assign_next(self, annotator_id: str, candidates: int = 8, max_open: int | None = None,
                    min_time_s: float = 0.0, unreadable: list[str] | None = None) -> Task | None:
        """Give the annotator the next open sample in fair order (`fair_candidates`: each device's oldest first) that
        they have not seen, that still needs an annotator and whose deadline is more than `min_time_s` away (None
        too when they already hold `max_open` open tasks). Samples met whose image cannot be read are set aside on
        the way and appended to `unreadable`."""
        for _ in range(ASSIGN_ROUNDS):
            broken: list[tuple[str, str]] = []
            task = self._assign_once(annotator_id, candidates, max_open, min_time_s, broken)
            for sample_id, reason in broken:
                self._set_unreadable_aside(sample_id, reason, unreadable)
            if task is not None or not broken:
                return task
        return None

    def _assign_once(self, annotator_id: str, candidates: int, max_open: int | None, min_time_s: float,
                     broken: list[tuple[str, str]]) -> Task | None:
        """One assigning transaction over the first `candidates` in fair order; unreadable ones go to `broken`,
        untouched."""
        now = self.clock()
        with self.session() as s:
            if at_cap(s, annotator_id, max_open):
                return None
            aside = self.unreadable.current()
            ids = fair_candidates(s, lambda sample: assignable(sample, annotator_id, now, min_time_s, aside),
                                  candidates)
            for sample_id in ids:
                row = s.get(Sample, sample_id)
                try:
                    data = self.images.get(row.image_bytes, row.image_path)  # before the claim: nothing to undo
                except SampleImageMissingError as exc:
                    broken.append((sample_id, str(exc)))
                    continue
                won = s.execute(
                    update(Sample)
                    .where(Sample.id == sample_id, Sample.assigned_count < Sample.m, Sample.status.in_(OPEN_STATES))
                    .values(assigned_count=Sample.assigned_count + 1, status="assigned")).rowcount
                if won:
                    task_id = str(uuid.uuid4())
                    s.add(Assignment(id=task_id, sample_id=sample_id, annotator_id=annotator_id, status="open",
                                     assigned_at=now))
                    serve(s, row.device_id)
                    return self._task(s, task_id, row, annotator_id, data)
        return None

    def _task(self, s: Session, task_id: str, row: Sample, annotator_id: str, data: bytes | None = None) -> Task:
        """The task with its image (read now unless `data` is given; EMPTY_IMAGE: without it)."""
        if data is None:
            data = self.images.get(row.image_bytes, row.image_path)
        return Task(task_id, row.id, annotator_id, row.hdnn_kind, stored_image(row, data),
                    hub_pb2.ModelOutput.FromString(row.model_output), row.deadline, row.aggregator)

    def held_task(self, annotator_id: str, unreadable: list[str] | None = None) -> Task | None:
        """The annotator's oldest open task (given again instead of a new one when they are at their cap); if its
        image cannot be read now, the task is given back (so they are not stuck with it), its sample set aside
        (appended to `unreadable`) and None returned."""
        with self.session() as s:
            ids = open_task_ids(s, annotator_id)
            if not ids:
                return None
            task = s.get(Assignment, ids[0])
            try:
                return self._task(s, task.id, s.get(Sample, task.sample_id), annotator_id)
            except SampleImageMissingError as exc:
                broken = (task.id, task.sample_id, str(exc))
        with self.session() as s:
            give_back(s, broken[0], broken[1], WITHDRAWN)
        self._set_unreadable_aside(broken[1], broken[2], unreadable)
        return None

    def _set_unreadable_aside(self, sample_id: str, reason: str, unreadable: list[str] | None) -> None:
        self.unreadable.set_aside(sample_id, reason)  # type: ignore[attr-defined]
        if unreadable is not None:
            unreadable.append(sample_id)

    @retry_conflicts
    def withdraw_open(self, annotator_id: str) -> int:
        """Give a (paused) annotator's open tasks to others now; how many."""
        with self.session() as s:
            return withdraw_open_tasks(s, annotator_id)

    def open_task_count(self, annotator_id: str) -> int:
        with self.session() as s:
            return len(open_task_ids(s, annotator_id))

    def expire_assignments(self, timeout_s: float) -> int:
        """Tasks open for longer than `timeout_s` go back to the queue; returns how many. Those assigned before the
        clock stepped back have their timeout restarted first (`_restart_stepped_timeouts`)."""
        now = self.clock()
        self._restart_stepped_timeouts(now)
        with self.session() as s:
            return expire_assignments(s, now - timeout_s)

    def _restart_stepped_timeouts(self, now: float) -> None:
        """Open tasks assigned more than CLOCK_SLACK_S ahead of `now` (before the clock stepped back) count as
        assigned now. Its own transaction, on ix_assignments_status_assigned; rows another transaction holds are
        skipped (PostgreSQL SKIP LOCKED), never waited for (an answer locks its sample, then its task), and left
        to the next sweep."""
        ahead = now + CLOCK_SLACK_S
        with self.session() as s:
            rows = s.execute(select(Assignment.id, Assignment.assigned_at)
                             .where(Assignment.status == "open", Assignment.assigned_at > ahead)
                             .limit(RESTARTS).with_for_update(skip_locked=True)).all()
            if not rows:
                return
            s.execute(update(Assignment).where(Assignment.id.in_([row[0] for row in rows]),
                                               Assignment.status == "open", Assignment.assigned_at > ahead)
                      .values(assigned_at=now).execution_options(synchronize_session=False))
        log.warning("%d held task(s) were assigned up to %.0f s ahead of this hub's clock: it stepped back; their "
                    "assignment timeout counts from now", len(rows), max(row[1] for row in rows) - now)

    def open_task(self, task_id: str, annotator_id: str, *, with_image: bool = True) -> tuple[Task, float] | None:
        """The annotator's own open task and when it was assigned; None for anyone else's or a closed one. Answers
        and skips read it `with_image=False`: a file lost since the task was handed out must not lose the answer."""
        with self.session() as s:
            task = own_task(s, task_id, annotator_id)
            if task is None or task.status != "open":
                return None
            data = None if with_image else EMPTY_IMAGE
            return self._task(s, task.id, s.get(Sample, task.sample_id), annotator_id, data), task.assigned_at

    def task_state(self, task_id: str, annotator_id: str) -> str | None:
        """The state of the annotator's own task (open, answered, released, ...); None for anyone else's."""
        with self.session() as s:
            task = own_task(s, task_id, annotator_id)
            return task.status if task is not None else None

    def sample_of_task(self, task_id: str) -> str:
        if "\x00" in task_id:
            return ""
        with self.session() as s:
            task = s.get(Assignment, task_id)
            return task.sample_id if task is not None else ""

    @retry_conflicts
    def release_task(self, task_id: str, annotator_id: str, kind: str, latency_s: float) -> None:
        """Give a task back without a label (skip / can't tell): recorded, and the slot reopens for someone else.

        The annotator keeps its assignment row (status `released`), so the same sample is never offered to them
        again; nothing already answered changes. Of an answer, a skip and a timeout racing for one task exactly
        one wins; the others get TaskClosedError.
        """
        if kind not in RELEASE_KINDS:
            raise UnknownTaskError(f"release kind must be one of {RELEASE_KINDS}, got {kind!r}")
        with self.session() as s:
            task = own_task(s, task_id, annotator_id)
            if task is None:
                raise UnknownTaskError(f"no task {task_id[:64]!r} for annotator {annotator_id[:64]!r}")
            if task.status != "open" or not give_back(s, task_id, task.sample_id, "released"):
                raise TaskClosedError(f"task {task_id} is already closed ({_status_of(s, task_id)})")
            s.add(TaskEvent(task_id=task_id, sample_id=task.sample_id, annotator_id=annotator_id, kind=kind,
                            latency_s=max(0.0, latency_s), at=self.clock()))


def _status_of(s: Session, task_id: str) -> str:
    """The task's committed state, read afresh (the ORM's copy may predate the request that won)."""
    return str(s.scalar(select(Assignment.status).where(Assignment.id == task_id)))
