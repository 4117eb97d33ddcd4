"""Answers and closing (part of the knowledge base): storing answers, closing samples when m answers are in or
at the deadline (one by one, a failing sample set aside), aggregating, and the replies devices get.

The wall clock stepping back (an NTP correction, a clock set right): a deadline was compared with the stepped clock
as it stood, so every open sample stayed open for the step past its deadline (an hour's step: its device waited an
hour for a reply it had given up on, its people answered a sample nobody would use). A device sample stored further
ahead of the clock than CLOCK_SLACK_S (more than hub processes' clocks differ) was stored before the clock stepped
back: its deadline lies further off than its own answer window allows, and the deadline sweep closes it as due, with
the answers it has (`expire_due`). What is left of its window is not known (the size of the step is not), and the
device's deadline is a promise not to be broken: better a reply up to a window early than a step late. A sample
stored longer before the step than the step's size (a long window) looks like any other and still closes late by
the step. Gold samples never close. A forward step is taken as time that passed (the hub cannot tell it from time
it was down): every sample whose deadline it passes closes at the next sweep, partial or expired."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from hgen.hub.aggregators import AggregationInput
from hgen.hub.errors import AggregationError, TaskClosedError, UnknownTaskError
from hgen.hub.kb.conflicts import retry_conflicts
from hgen.hub.kb.guards import check_answer, claim_task, lock_sample, own_task
from hgen.hub.kb.models import (OPEN_STATES, AnnotatorPause, AnswerRow, Assignment, Device, GoldItem, Reply,
                                Sample, TaskEvent)
from hgen.hub.kb.tasks import CLOCK_SLACK_S, GOLD_TRANSPORT
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
# The share of the people asked who must agree on a class for it to be kept as the sample's label (`_agreed_class`).
MIN_AGREEMENT = 0.5
SET_ASIDE = "set_aside"  # a due sample that could not be closed: out of the sweep, left for an operator
REPLY_STATUS = {"answered": hub_pb2.REPLY_STATUS_ANSWERED, "partial": hub_pb2.REPLY_STATUS_PARTIAL,
                "expired": hub_pb2.REPLY_STATUS_EXPIRED}


class Closing:
    """Mixin of `KnowledgeBase` (which provides `session`, `clock`, `num_classes` and `aggregator`)."""

    @retry_conflicts
    def submit_answer(self, answer: hub_pb2.Answer) -> hub_pb2.SampleReply | None:
        """Store an answer; when it is the m-th, close the sample and return the reply it produced. The sample is
        locked, then the task claimed only while still open: of racing answers, skips and timeouts of one task
        exactly one wins, the others get TaskClosedError (409), and nothing is stored twice."""
        with self.session() as s:
            task = own_task(s, answer.task_id, answer.annotator_id)
            if task is None:
                raise UnknownTaskError(f"no task {answer.task_id[:64]!r} for annotator {answer.annotator_id[:64]!r}")
            if task.status != "open":
                raise TaskClosedError(f"task {answer.task_id} is already {task.status}")
            row = lock_sample(s, task.sample_id)
            check_answer(row, answer, self.num_classes)  # refused now, never stored
            if row.status not in OPEN_STATES:
                raise TaskClosedError(f"task {answer.task_id}: sample {task.sample_id} is already closed")
            if not claim_task(s, task.id, "answered"):
                raise TaskClosedError(f"task {answer.task_id} was closed by another request (answer, skip or timeout)")
            count = s.execute(
                update(Sample).where(Sample.id == task.sample_id)
                .values(answer_count=Sample.answer_count + 1).returning(Sample.answer_count, Sample.m)).one()
            s.add(self._answer_row(task, answer))
            s.flush()
            if count[0] >= count[1]:
                return self._close_or_leave(s, task.sample_id)
        return None

    def _close_or_leave(self, s: Session, sample_id: str) -> hub_pb2.SampleReply | None:
        """Close on the m-th answer; if an answer stored before answers were checked spoils aggregation, keep the
        answer and leave the sample to the deadline sweep (which sets it aside) rather than refuse this one."""
        try:
            with s.begin_nested():
                return self._close(s, sample_id, "answered")
        except (AggregationError, ArithmeticError, IndexError, KeyError, ValueError) as exc:
            log.warning("sample %s not closed on its last answer (%s); the deadline sweep sets it aside",
                        sample_id, exc)
            return None

    def _answer_row(self, task: Assignment, answer: hub_pb2.Answer) -> AnswerRow:
        stored = hub_pb2.Answer()
        stored.CopyFrom(answer)
        stored.sample_id = task.sample_id
        class_id = answer.class_id if answer.WhichOneof("label") == "class_id" else None
        return AnswerRow(task_id=task.id, sample_id=task.sample_id, annotator_id=task.annotator_id,
                         class_id=class_id, payload=stored.SerializeToString(), latency_s=answer.latency_s,
                         operations=answer.operations, simulated=answer.simulated, submitted_at=self.clock())

    # --- closing: aggregation and the reply -------------------------------------------------------------

    def expire_due(self, limit: int = 256, set_aside: list[str] | None = None) -> list[hub_pb2.SampleReply]:
        """Close samples whose deadline passed: partial with the answers that arrived, else expired.

        One transaction per sample: a sample that cannot be closed (say, an answer stored before answers were
        checked breaks its aggregation) is set aside (status `set_aside`, logged once, its id appended to
        `set_aside`) and never blocks the others, nor the sweeps after it, nor a restart. Device samples stored
        before the clock stepped back count as due too (`_stored_ahead`).
        """
        now = self.clock()
        with self.session() as s:
            ids = list(s.scalars(select(Sample.id).where(Sample.status.in_(OPEN_STATES), Sample.deadline <= now)
                                 .order_by(Sample.deadline).limit(limit)).all())
            if len(ids) < limit:
                ids += [i for i in _stored_ahead(s, now, limit - len(ids)) if i not in ids]
        replies = []
        for sample_id in ids:
            try:
                with self.session() as s:
                    row = s.get(Sample, sample_id)
                    reply = self._close(s, sample_id, "partial" if row.answer_count else "expired")
            except SQLAlchemyError:
                raise  # the database, not the sample: the sweep retries next round
            except Exception as exc:  # noqa: BLE001 (any failure of one sample must not stop the others)
                self._set_aside(sample_id, exc)
                if set_aside is not None:
                    set_aside.append(sample_id)
                continue
            if reply is not None:
                replies.append(reply)
        return replies

    def _set_aside(self, sample_id: str, exc: Exception) -> None:
        log.error("sample %s could not be closed at its deadline (%s: %s); set aside, the sweep goes on",
                  sample_id, type(exc).__name__, exc)
        with self.session() as s:
            s.execute(update(Sample).where(Sample.id == sample_id, Sample.status.in_(OPEN_STATES))
                      .values(status=SET_ASIDE, closed_at=self.clock()))

    def next_deadline(self) -> float | None:
        with self.session() as s:
            return s.scalar(select(func.min(Sample.deadline)).where(Sample.status.in_(OPEN_STATES)))

    def _close(self, s: Session, sample_id: str, status: str) -> hub_pb2.SampleReply | None:
        now = self.clock()
        won = s.execute(update(Sample).where(Sample.id == sample_id, Sample.status.in_(OPEN_STATES))
                        .values(status=status, closed_at=now)).rowcount
        if not won:
            return None  # another hub (or the expiry sweep) closed it first
        s.execute(update(Assignment).where(Assignment.sample_id == sample_id, Assignment.status == "open")
                  .values(status="closed"))
        row = s.get(Sample, sample_id)
        given = [hub_pb2.Answer.FromString(p) for p in
                 s.scalars(select(AnswerRow.payload).where(AnswerRow.sample_id == sample_id)
                           .order_by(AnswerRow.id)).all()]
        labour = float(sum(a.operations for a in given))  # the effort spent, paused people's too
        answers = _without_paused(s, given)
        if given and not answers:
            status = "expired"  # every answer was a paused person's: the device keeps its model's
            s.execute(update(Sample).where(Sample.id == sample_id).values(status=status))
        queue = s.scalar(select(func.count()).select_from(Sample).where(Sample.status.in_(OPEN_STATES)))
        reply = hub_pb2.SampleReply(sample_id=sample_id, device_id=row.device_id, batch_id=row.batch_id,
                                    reply_id=str(uuid.uuid4()), status=REPLY_STATUS[status], answers=answers,
                                    labour=labour, queue_depth=int(queue or 0), **self._declines(s, sample_id))
        if answers:
            reply.aggregated.CopyFrom(self._aggregate(s, row, answers))
        s.add(Reply(sample_id=sample_id, reply_id=reply.reply_id, device_id=row.device_id, status=status,
                    aggregator=row.aggregator,
                    class_id=_agreed_class(reply.aggregated, answers, row.m) if answers else None,
                    agreed=agreed_drawing(reply.aggregated, answers, row.m) if answers else None,
                    labour=labour, payload=reply.SerializeToString(), transport=row.transport, delivered=False,
                    created_at=now))
        s.execute(update(Device).where(Device.id == row.device_id)
                  .values(labour_spent=Device.labour_spent + labour, samples_replied=Device.samples_replied + 1))
        return reply

    def _declines(self, s: Session, sample_id: str) -> dict[str, int]:
        """The reply's cant_tell / skipped counts: releases are no answers, yet the device should know of them."""
        kinds = dict(s.execute(select(TaskEvent.kind, func.count()).where(TaskEvent.sample_id == sample_id)
                               .group_by(TaskEvent.kind)).tuples().all())
        return {"cant_tell": int(kinds.get("cant_tell", 0)), "skipped": int(kinds.get("skip", 0))}

    def _aggregate(self, s: Session, row: Sample, answers: list[hub_pb2.Answer]) -> hub_pb2.AggregatedLabel:
        aggregator = self.aggregator(row.aggregator)
        history, truths = _history(s, aggregator.history_size) if aggregator.history_size else ((), ())
        output = hub_pb2.ModelOutput.FromString(row.model_output)
        data = AggregationInput(row.id, tuple(answers), row.m, self.num_classes,
                                tuple(output.class_probabilities), history, truths)
        return aggregator.aggregate(data)

    # --- replies ----------------------------------------------------------------------------------------

    def replies_for(self, sample_ids: Sequence[str]) -> list[hub_pb2.SampleReply]:
        if not sample_ids:
            return []
        with self.session() as s:
            payloads = s.scalars(select(Reply.payload).where(Reply.sample_id.in_(list(sample_ids)))).all()
        return [hub_pb2.SampleReply.FromString(p) for p in payloads]

    def transports_of(self, sample_ids: Sequence[str]) -> dict[str, str]:
        """sample id -> the transport it came by (replies go back the same way)."""
        with self.session() as s:
            rows = s.execute(select(Sample.id, Sample.transport).where(Sample.id.in_(list(sample_ids)))).tuples()
            return dict(rows.all())

    def undelivered(self, transport: str, limit: int = 1000,
                    after: tuple[float, str] = (-1.0, "")) -> list[tuple[tuple[float, str], hub_pb2.SampleReply]]:
        """Replies on `transport` the broker has not acknowledged, oldest first, after the cursor `after`; each
        with its cursor (created_at, sample id), so a caller pages through any backlog in bounded steps."""
        created, sample = after
        with self.session() as s:
            rows = s.execute(select(Reply.created_at, Reply.sample_id, Reply.payload)
                             .where(Reply.transport == transport, Reply.delivered.is_(False),
                                    or_(Reply.created_at > created,
                                        and_(Reply.created_at == created, Reply.sample_id > sample)))
                             .order_by(Reply.created_at, Reply.sample_id).limit(limit)).tuples().all()
        return [((at, sample_id), hub_pb2.SampleReply.FromString(payload)) for at, sample_id, payload in rows]

    def mark_delivered(self, sample_ids: Sequence[str]) -> None:
        if sample_ids:
            with self.session() as s:
                s.execute(update(Reply).where(Reply.sample_id.in_(list(sample_ids))).values(delivered=True))


def _stored_ahead(s: Session, now: float, limit: int) -> list[str]:
    """Open device samples stored more than CLOCK_SLACK_S ahead of `now` (before the clock stepped back; another hub
    process's clock is never that far off), up to `limit`, logged; an index range bounded by the open samples
    (ix_samples_status_received on SQLite, ix_samples_open_device on PostgreSQL)."""
    rows = s.execute(select(Sample.id, Sample.received_at)
                     .where(Sample.status.in_(OPEN_STATES), Sample.received_at > now + CLOCK_SLACK_S,
                            Sample.transport != GOLD_TRANSPORT)
                     .order_by(Sample.received_at).limit(limit)).all()
    if rows:
        log.warning("%d open sample(s) were stored up to %.0f s ahead of this hub's clock: it stepped back; they "
                    "close now, as due", len(rows), rows[-1][1] - now)
    return [row[0] for row in rows]


def _class_of(label: hub_pb2.AggregatedLabel) -> int | None:
    return label.class_id if label.WhichOneof("label") == "class_id" else None


def _without_paused(s: Session, answers: list[hub_pb2.Answer]) -> list[hub_pb2.Answer]:
    """The answers of people not paused now: one paused (failed gold, an operator's decision) after answering a
    sample still open had that answer aggregated, sent to the device, which fused it, and stored as the label."""
    people = {a.annotator_id for a in answers}
    paused = set(s.scalars(select(AnnotatorPause.annotator_id).where(AnnotatorPause.annotator_id.in_(people))))
    return [a for a in answers if a.annotator_id not in paused]


def _history(s: Session, size: int) -> tuple[tuple[tuple[str, str, int], ...], tuple[tuple[str, int], ...]]:
    """The newest `size` class answers of people not paused (a paused person's answers no longer count, here as at
    closing), and the known classes of the gold tasks among them."""
    paused = select(AnnotatorPause.annotator_id).where(AnnotatorPause.annotator_id == AnswerRow.annotator_id)
    rows = s.execute(select(AnswerRow.sample_id, AnswerRow.annotator_id, AnswerRow.class_id, GoldItem.class_id)
                     .outerjoin(GoldItem, GoldItem.sample_id == AnswerRow.sample_id)
                     .where(AnswerRow.class_id.is_not(None), ~paused.exists())
                     .order_by(AnswerRow.id.desc()).limit(size)).tuples().all()
    truths = {sample_id: int(truth) for sample_id, _, _, truth in rows if truth is not None}
    return tuple((t, w, int(c)) for t, w, c, _ in rows), tuple(truths.items())


def _agreed_class(label: hub_pb2.AggregatedLabel, answers: list[hub_pb2.Answer], m: int) -> int | None:
    """The class kept as the sample's label (what retraining learns from and is judged on): one a strict majority
    of the m people asked (or of those who answered, if more did) gave, whatever the aggregator, and that it is
    sure of (confidence above MIN_AGREEMENT). A doubtful one (one answer of three at the deadline, an even split)
    still goes to the device with its confidence, which fuses the answers itself, but it was also stored and
    retrained on as sure as three people agreeing (dawid_skene's posterior called a lone answer certain)."""
    class_id = _class_of(label)
    if class_id is None or label.confidence <= MIN_AGREEMENT:
        return None
    votes = sum(1 for a in answers if a.WhichOneof("label") == "class_id" and a.class_id == class_id)
    return class_id if votes > MIN_AGREEMENT * max(len(answers), m) else None


def agreed_drawing(label: hub_pb2.AggregatedLabel, answers: list[hub_pb2.Answer], m: int) -> bool | None:
    """For a drawing (boxes, regions; None for a class): whether it is kept as a retraining label, by
    `_agreed_class`'s rule. A strict majority of the m people asked must have drawn, and a strict majority of them
    must have drawn each box, or left it out (a box's score is the share of those who drew that drew it): that box
    is then learned as there, or as nothing there (`hgen.hub.retrain.labels`). One person's box beside another's
    empty drawing, or one answer of three at the deadline, was retrained on as surely as three people agreeing.
    The device still gets the reply and fuses it itself."""
    drawers = {a.annotator_id for a in answers if a.WhichOneof("label") in ("boxes", "regions")}
    if not drawers:
        return None
    n, asked = len(drawers), max(len(drawers), m)
    if n <= MIN_AGREEMENT * asked:
        return False
    boxes = label.boxes.boxes if label.WhichOneof("label") == "boxes" else ()
    drew = [round(box.score * n) for box in boxes]
    return all(k > MIN_AGREEMENT * asked or n - k > MIN_AGREEMENT * asked for k in drew)
