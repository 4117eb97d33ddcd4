"""Annotator tasks (part of the knowledge base): handing samples to people, held and open tasks, timeouts and
releases. Each transition is a conditional UPDATE, so hub processes sharing a database never assign a slot twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from hgen.hub.errors import TaskClosedError, UnknownTaskError
from hgen.hub.kb.guards import at_cap, expire_assignments, open_task_ids
from hgen.hub.kb.models import OPEN_STATES, Assignment, Sample, TaskEvent
from hgen.protos import hub_pb2

GOLD_TRANSPORT = "gold"  # gold tasks are hub-owned samples, handed out by hgen.hub.gold, never by assign_next
RELEASE_KINDS = ("skip", "cant_tell")


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


def time_to_answer(now: float, min_time_s: float) -> ColumnElement[bool]:
    """At least `min_time_s` left before the sample's deadline, or, for a device whose whole deadline is shorter
    than twice that, half of it: a device that waits 20 s for people must still be answered, not skipped."""
    window = Sample.deadline - Sample.received_at
    return or_(Sample.deadline > now + min_time_s,
               and_(window < 2 * min_time_s, Sample.deadline - now >= window / 2))


class TaskQueue:
    """Mixin of `KnowledgeBase` (which provides `session`, `clock` and `images`)."""


    def assign_next(self, annotator_id: str, candidates: int = 8, max_open: int | None = None,
                    min_time_s: float = 0.0) -> Task | None:
        """Give the annotator the oldest open sample it has not seen that still needs an annotator and whose deadline
        is more than `min_time_s` away (None too when they already hold `max_open` open tasks)."""
        now = self.clock()
        with self.session() as s:
            if at_cap(s, annotator_id, max_open):
                return None
            seen = select(Assignment.sample_id).where(Assignment.annotator_id == annotator_id)
            ids = s.scalars(
                select(Sample.id)
                .where(Sample.status.in_(OPEN_STATES), Sample.assigned_count < Sample.m,
                       Sample.deadline > now, time_to_answer(now, min_time_s),
                       Sample.transport != GOLD_TRANSPORT, Sample.id.not_in(seen))
                .order_by(Sample.received_at).limit(candidates)).all()
            for sample_id in ids:
                won = s.execute(
                    update(Sample)
                    .where(Sample.id == sample_id, Sample.assigned_count < Sample.m, Sample.status.in_(OPEN_STATES))
                    .values(assigned_count=Sample.assigned_count + 1, status="assigned")).rowcount
                if won:
                    task_id = str(uuid.uuid4())
                    s.add(Assignment(id=task_id, sample_id=sample_id, annotator_id=annotator_id, status="open",
                                     assigned_at=now))
                    return self._task(s, task_id, s.get(Sample, sample_id), annotator_id)
        return None

    def _task(self, s: Session, task_id: str, row: Sample, annotator_id: str) -> Task:
        image = hub_pb2.Image(format=row.image_format, height=row.height, width=row.width, channels=row.channels,
                              data=self.images.get(row.image_bytes, row.image_path))
        return Task(task_id, row.id, annotator_id, row.hdnn_kind, image,
                    hub_pb2.ModelOutput.FromString(row.model_output), row.deadline, row.aggregator)

    def held_task(self, annotator_id: str) -> Task | None:
        """The annotator's oldest open task (given again instead of a new one when they are at their cap)."""
        with self.session() as s:
            ids = open_task_ids(s, annotator_id)
            if not ids:
                return None
            task = s.get(Assignment, ids[0])
            return self._task(s, task.id, s.get(Sample, task.sample_id), annotator_id)

    def open_task_count(self, annotator_id: str) -> int:
        with self.session() as s:
            return len(open_task_ids(s, annotator_id))

    def expire_assignments(self, timeout_s: float) -> int:
        """Tasks open for longer than `timeout_s` go back to the queue; returns how many."""
        with self.session() as s:
            return expire_assignments(s, self.clock() - timeout_s)

    def open_task(self, task_id: str, annotator_id: str) -> tuple[Task, float] | None:
        """The annotator's own open task and when it was assigned; None for anyone else's or a closed one."""
        with self.session() as s:
            task = s.get(Assignment, task_id)
            if task is None or task.annotator_id != annotator_id or task.status != "open":
                return None
            return self._task(s, task.id, s.get(Sample, task.sample_id), annotator_id), task.assigned_at

    def sample_of_task(self, task_id: str) -> str:
        with self.session() as s:
            task = s.get(Assignment, task_id)
            return task.sample_id if task is not None else ""

    def release_task(self, task_id: str, annotator_id: str, kind: str, latency_s: float) -> None:
        """Give a task back without a label (skip / can't tell): recorded, and the slot reopens for someone else.

        The annotator keeps its assignment row (status `released`), so the same sample is never offered to them
        again; nothing already answered changes.
        """
        if kind not in RELEASE_KINDS:
            raise UnknownTaskError(f"release kind must be one of {RELEASE_KINDS}, got {kind!r}")
        with self.session() as s:
            task = s.get(Assignment, task_id)
            if task is None or task.annotator_id != annotator_id:
                raise UnknownTaskError(f"no task {task_id!r} for annotator {annotator_id!r}")
            if task.status != "open":
                raise TaskClosedError(f"task {task_id} is already {task.status}")
            task.status = "released"
            s.execute(update(Sample).where(Sample.id == task.sample_id, Sample.status.in_(OPEN_STATES),
                                           Sample.assigned_count > 0)
                      .values(assigned_count=Sample.assigned_count - 1))
            s.add(TaskEvent(task_id=task_id, sample_id=task.sample_id, annotator_id=annotator_id, kind=kind,
                            latency_s=max(0.0, latency_s), at=self.clock()))
