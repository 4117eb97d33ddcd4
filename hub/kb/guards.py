"""Guards on the knowledge base's task transitions against hostile or careless annotators (issue 16).

- An answer is checked against its sample's aggregator *before* it is stored: one stored answer that cannot be
  aggregated would make every later attempt to close the sample fail.
- A person holds at most `max_open` open tasks across all their sessions (no hoarding), and a task not answered
  within the assignment timeout goes back to the queue; a paused person's open tasks go back at once.
- Every change of a task's state (answer, skip, timeout, pause) first locks its sample's row, then claims the
  task with a conditional UPDATE (`WHERE status = 'open'`): racing requests on PostgreSQL queue on one row in one
  order (closing a sample locks it first too), so exactly one wins and the others see it; a transaction locking
  several samples (a pause, the timeout sweep) takes them by sample id, and one PostgreSQL still aborts for a race
  is run again (`conflicts.retry_conflicts`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from sqlalchemy import Row, func, select, text, update
from sqlalchemy.orm import Session

from hgen.hub.aggregators import AggregationInput, get_aggregator
from hgen.hub.errors import AggregationError, InvalidRequestError
from hgen.hub.kb.models import OPEN_STATES, Assignment, Sample
from hgen.protos import hub_pb2

TIMED_OUT = "timed_out"  # assignment status of a task given back by the timeout
WITHDRAWN = "withdrawn"  # taken back from a paused annotator: neither their answer nor their decline


def check_answer(row: Sample, answer: hub_pb2.Answer, num_classes: int) -> None:
    """InvalidRequestError unless `answer` is the kind the sample's aggregator takes and aggregates on its own."""
    aggregator = get_aggregator(row.aggregator)
    given = answer.WhichOneof("label")
    if given != aggregator.label:
        raise InvalidRequestError(f"task {answer.task_id} takes a {aggregator.label} answer, got {given or 'none'}")
    shapes = list(answer.boxes.boxes) + list(answer.regions.regions)
    classes = [answer.class_id] if given == "class_id" else [b.class_id for b in answer.boxes.boxes]
    if any(not 0 <= c < num_classes for c in classes):
        raise InvalidRequestError(f"class ids must be in 0..{num_classes - 1}, got {sorted(set(classes))[-1]}")
    coords = [v for s in shapes for v in (s.x_min, s.y_min, s.x_max, s.y_max)]
    if not all(math.isfinite(v) and abs(v) < 1e9 for v in coords):
        raise InvalidRequestError("shape coordinates must be finite numbers")
    probabilities = tuple(hub_pb2.ModelOutput.FromString(row.model_output).class_probabilities)
    try:
        aggregator.aggregate(AggregationInput(row.id, (answer,), 1, num_classes, probabilities, ()))
    except (AggregationError, ArithmeticError, IndexError, ValueError) as exc:
        raise InvalidRequestError(f"the answer cannot be aggregated ({aggregator.name}): {exc}") from None


def serialise_annotator(s: Session, annotator_id: str) -> None:
    """PostgreSQL: one assigning transaction per annotator at a time (count, then insert), so two sessions of one
    person cannot both slip under the cap; SQLite's BEGIN IMMEDIATE already serialises every writer."""
    if s.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"assign:{annotator_id}".encode()).digest()[:8], "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def open_task_ids(s: Session, annotator_id: str) -> list[str]:
    """The annotator's open tasks, oldest first."""
    return list(s.scalars(select(Assignment.id).where(Assignment.annotator_id == annotator_id,
                                                      Assignment.status == "open")
                          .order_by(Assignment.assigned_at, Assignment.id)).all())


def at_cap(s: Session, annotator_id: str, max_open: int | None) -> bool:
    """Serialises on the annotator, then: do they already hold `max_open` open tasks? (None: no cap)."""
    if max_open is None:
        return False
    serialise_annotator(s, annotator_id)
    count = s.scalar(select(func.count()).select_from(Assignment)
                     .where(Assignment.annotator_id == annotator_id, Assignment.status == "open")) or 0
    return count >= max_open


def own_task(s: Session, task_id: str, annotator_id: str) -> Assignment | None:
    """The annotator's task of that id (any state), else None; a key with a NUL is no task (PostgreSQL refuses to
    even look it up)."""
    if "\x00" in task_id or "\x00" in annotator_id:
        return None
    task = s.get(Assignment, task_id)
    return task if task is not None and task.annotator_id == annotator_id else None


def lock_sample(s: Session, sample_id: str) -> Sample:
    """The sample's row, locked until the transaction ends (PostgreSQL FOR NO KEY UPDATE, which inserts referencing
    the row do not wait for; SQLite's BEGIN IMMEDIATE already serialises writers) and read afresh."""
    query = select(Sample).where(Sample.id == sample_id).with_for_update(key_share=True)
    return s.scalars(query.execution_options(populate_existing=True)).one()


def claim_task(s: Session, task_id: str, status: str) -> bool:
    """Move an open task to `status`; False when it is no longer open (another request or the sweep came first)."""
    claimed = s.execute(update(Assignment).where(Assignment.id == task_id, Assignment.status == "open")
                        .values(status=status).execution_options(synchronize_session=False)).rowcount
    return bool(claimed)


def give_back(s: Session, task_id: str, sample_id: str, status: str) -> bool:
    """An open task leaves its holder without an answer: its slot reopens for someone else (the holder keeps the
    row, so the same sample is not offered to them again). False when it was no longer open."""
    lock_sample(s, sample_id)
    if not claim_task(s, task_id, status):
        return False
    s.execute(update(Sample).where(Sample.id == sample_id, Sample.status.in_(OPEN_STATES), Sample.assigned_count > 0)
              .values(assigned_count=Sample.assigned_count - 1).execution_options(synchronize_session=False))
    return True


def withdraw_open_tasks(s: Session, annotator_id: str) -> int:
    """A paused annotator's open tasks go back to the queue at once (others take them); returns how many."""
    rows = s.execute(select(Assignment.id, Assignment.sample_id)
                     .where(Assignment.annotator_id == annotator_id, Assignment.status == "open")).all()
    return sum(give_back(s, task_id, sample_id, WITHDRAWN) for task_id, sample_id in in_lock_order(rows))


def in_lock_order(rows: Sequence[Row[tuple[str, str]]]) -> list[Row[tuple[str, str]]]:
    """(task id, sample id) rows whose samples one transaction locks, by sample id: every transaction locking several samples takes them
    in one order, so two (a pause and the timeout sweep, two pauses, two sweeps) never wait on each other."""
    return sorted(rows, key=lambda row: (row[1], row[0]))


def expire_assignments(s: Session, cutoff: float, limit: int = 500) -> int:
    """Open tasks assigned at or before `cutoff` time out and go back to the queue. Returns how many timed out."""
    rows = s.execute(select(Assignment.id, Assignment.sample_id)
                     .where(Assignment.status == "open", Assignment.assigned_at <= cutoff)
                     .order_by(Assignment.assigned_at, Assignment.id).limit(limit)).all()
    return sum(give_back(s, task_id, sample_id, TIMED_OUT) for task_id, sample_id in in_lock_order(rows))
