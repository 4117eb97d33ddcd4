"""Guards on the knowledge base's task transitions against hostile or careless annotators (issue 16).

- An answer is checked against its sample's aggregator *before* it is stored: one stored answer that cannot be
  aggregated would make every later attempt to close the sample fail.
- A person holds at most `max_open` open tasks across all their sessions (no hoarding), and a task not answered
  within the assignment timeout goes back to the queue.
"""

from __future__ import annotations

import hashlib
import math

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from hgen.hub.aggregators import AggregationInput, get_aggregator
from hgen.hub.errors import AggregationError, InvalidRequestError
from hgen.hub.kb.models import OPEN_STATES, Assignment, Sample
from hgen.protos import hub_pb2

TIMED_OUT = "timed_out"  # assignment status of a task given back by the timeout


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


def expire_assignments(s: Session, cutoff: float, limit: int = 500) -> int:
    """Open tasks assigned at or before `cutoff` time out: their slot reopens for someone else (the annotator keeps
    the row, so the same sample is not offered to them again). Returns how many timed out."""
    rows = s.execute(select(Assignment.id, Assignment.sample_id)
                     .where(Assignment.status == "open", Assignment.assigned_at <= cutoff)
                     .order_by(Assignment.assigned_at).limit(limit)).all()
    expired = 0
    for task_id, sample_id in rows:
        if s.execute(update(Assignment).where(Assignment.id == task_id, Assignment.status == "open")
                     .values(status=TIMED_OUT)).rowcount:
            expired += 1
            s.execute(update(Sample).where(Sample.id == sample_id, Sample.status.in_(OPEN_STATES),
                                           Sample.assigned_count > 0)
                      .values(assigned_count=Sample.assigned_count - 1))
    return expired
