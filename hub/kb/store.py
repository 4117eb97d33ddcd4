"""The knowledge base: every state transition of a sample is one short transaction here.

Lifecycle: received -> assigned (1..m annotators hold a task) -> answered (m answers) or, at the deadline,
partial (some answers) / expired (none). Every transition is a conditional UPDATE whose row count says who
won, so several hub processes on one database never assign a slot twice or close a sample twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hgen.hub.aggregators import AggregationInput, get_aggregator
from hgen.hub.errors import TaskClosedError, UnknownTaskError
from hgen.hub.kb.engine import make_engine, sqlite_path
from hgen.hub.kb.images import ImageStore
from hgen.hub.kb.migrate import upgrade
from hgen.hub.kb.models import (
    OPEN_STATES,
    Annotator,
    AnswerRow,
    Assignment,
    Base,
    Batch,
    Bundle,
    Device,
    Reply,
    Sample,
    TaskEvent,
)
from hgen.protos import hub_pb2

GOLD_TRANSPORT = "gold"  # gold tasks are hub-owned samples, handed out by hgen.hub.gold, never by assign_next
RELEASE_KINDS = ("skip", "cant_tell")
REPLY_STATUS = {"answered": hub_pb2.REPLY_STATUS_ANSWERED, "partial": hub_pb2.REPLY_STATUS_PARTIAL,
                "expired": hub_pb2.REPLY_STATUS_EXPIRED}


@dataclass(frozen=True)
class NewSample:
    """A validated sample ready to insert, with the hub's decisions (m, aggregator, deadline, labour)."""

    sample: hub_pb2.Sample
    batch_id: str
    m: int
    aggregator: str
    deadline: float
    difficulty: float
    labour: float
    transport: str


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


@dataclass(frozen=True)
class BundleRecord:
    name: str
    version: str
    sha256: str
    size: int
    signature: bytes
    path: str
    published_at: float
    fetch_uri: str = ""


class KnowledgeBase:
    """SQLAlchemy-backed store shared by every hub process (no hub state lives anywhere else)."""

    def __init__(self, engine: Engine, images: ImageStore, *, num_classes: int = 10,
                 history: int = 600, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.images = images
        self.num_classes = num_classes
        self.history = history
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, image_dir: Path | None = None, inline_max_bytes: int = 64 * 1024,
             migrate: bool = True, **kwargs: object) -> KnowledgeBase:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        db_file = sqlite_path(url)
        if image_dir is None and db_file is not None:
            image_dir = db_file.parent / f"{db_file.stem}-images"
        return cls(engine, ImageStore(image_dir, inline_max_bytes), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # --- devices and annotators -------------------------------------------------------------------------

    def register_devices(self, device_ids: Sequence[str]) -> None:
        for device_id in device_ids:
            self._insert_ignore(Device(id=device_id, registered_at=self.clock(), labour_spent=0.0,
                                       samples_replied=0))

    def device_exists(self, device_id: str) -> bool:
        with self.session() as s:
            return s.get(Device, device_id) is not None

    def register_annotator(self, annotator_id: str, kind: str = "human") -> None:
        self._insert_ignore(Annotator(id=annotator_id, kind=kind, created_at=self.clock()))

    def record_status(self, status: hub_pb2.DeviceStatus) -> bool:
        """Store a device's last status; False when the device is unknown."""
        with self.session() as s:
            device = s.get(Device, status.device_id)
            if device is None:
                return False
            device.last_status = status.SerializeToString()
            device.last_seen = self.clock()
            return True

    def _insert_ignore(self, row: Base) -> None:
        try:
            with self.session() as s:
                if s.get(type(row), row.id) is None:  # type: ignore[attr-defined]
                    s.add(row)
        except IntegrityError:
            pass  # another hub inserted it between our check and our insert

    # --- ingest -----------------------------------------------------------------------------------------

    def ensure_batch(self, request: hub_pb2.AnnotationRequest, m: int, deadline: float, budget: float) -> None:
        try:
            with self.session() as s:
                if s.get(Batch, request.batch_id) is None:
                    s.add(Batch(id=request.batch_id, device_id=request.device_id, m=m, deadline=deadline,
                                labour_budget=budget, labour_reserved=0.0, created_at=self.clock()))
        except IntegrityError:
            pass

    def sample_exists(self, sample_id: str) -> bool:
        with self.session() as s:
            return s.get(Sample, sample_id) is not None

    def add_sample(self, new: NewSample) -> str:
        """Insert the sample and reserve its labour: 'accepted', 'duplicate' or 'over_budget'."""
        try:
            with self.session() as s:
                if s.get(Sample, new.sample.sample_id) is not None:
                    return "duplicate"
                if not self._reserve_labour(s, new.batch_id, new.labour):
                    return "over_budget"
                s.add(self._sample_row(new))
        except IntegrityError:
            return "duplicate"  # the same id committed by another hub a moment ago
        return "accepted"

    def _reserve_labour(self, s: Session, batch_id: str, labour: float) -> bool:
        result = s.execute(
            update(Batch)
            .where(Batch.id == batch_id,
                   (Batch.labour_budget <= 0) | (Batch.labour_reserved + labour <= Batch.labour_budget + 1e-9))
            .values(labour_reserved=Batch.labour_reserved + labour))
        return result.rowcount == 1

    def _sample_row(self, new: NewSample) -> Sample:
        sample = new.sample
        inline, path = self.images.put(sample.sample_id, sample.image)
        captured = sample.captured_at.ToNanoseconds() / 1e9 if sample.HasField("captured_at") else None
        return Sample(
            id=sample.sample_id, batch_id=new.batch_id, device_id=sample.device_id,
            bundle_name=sample.bundle_name, bundle_version=sample.bundle_version, captured_at=captured,
            hdnn_kind=sample.output.kind, image_format=sample.image.format, height=sample.image.height,
            width=sample.image.width, channels=sample.image.channels, image_bytes=inline, image_path=path,
            model_output=sample.output.SerializeToString(), confidence=sample.output.confidence,
            difficulty=new.difficulty, labour_reserved=new.labour, m=new.m, aggregator=new.aggregator,
            transport=new.transport, status="received", assigned_count=0, answer_count=0,
            deadline=new.deadline, received_at=self.clock())

    # --- annotator tasks --------------------------------------------------------------------------------

    def assign_next(self, annotator_id: str, candidates: int = 8) -> Task | None:
        """Give the annotator the oldest open sample it has not seen that still needs an annotator."""
        now = self.clock()
        with self.session() as s:
            seen = select(Assignment.sample_id).where(Assignment.annotator_id == annotator_id)
            ids = s.scalars(
                select(Sample.id)
                .where(Sample.status.in_(OPEN_STATES), Sample.assigned_count < Sample.m, Sample.deadline > now,
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
                    hub_pb2.ModelOutput.FromString(row.model_output), row.deadline)

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

    def submit_answer(self, answer: hub_pb2.Answer) -> hub_pb2.SampleReply | None:
        """Store an answer; when it is the m-th, close the sample and return the reply it produced."""
        with self.session() as s:
            task = s.get(Assignment, answer.task_id)
            if task is None or task.annotator_id != answer.annotator_id:
                raise UnknownTaskError(f"no task {answer.task_id!r} for annotator {answer.annotator_id!r}")
            if task.status != "open":
                raise TaskClosedError(f"task {answer.task_id} is already {task.status}")
            count = s.execute(
                update(Sample).where(Sample.id == task.sample_id, Sample.status.in_(OPEN_STATES))
                .values(answer_count=Sample.answer_count + 1).returning(Sample.answer_count, Sample.m)).first()
            if count is None:
                raise TaskClosedError(f"task {answer.task_id}: sample {task.sample_id} is already closed")
            task.status = "answered"
            s.add(self._answer_row(task, answer))
            s.flush()
            if count[0] >= count[1]:
                return self._close(s, task.sample_id, "answered")
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

    def expire_due(self, limit: int = 256) -> list[hub_pb2.SampleReply]:
        """Close samples whose deadline passed: partial with the answers that arrived, else expired."""
        now = self.clock()
        replies = []
        with self.session() as s:
            ids = s.scalars(select(Sample.id).where(Sample.status.in_(OPEN_STATES), Sample.deadline <= now)
                            .order_by(Sample.deadline).limit(limit)).all()
            for sample_id in ids:
                row = s.get(Sample, sample_id)
                reply = self._close(s, sample_id, "partial" if row.answer_count else "expired")
                if reply is not None:
                    replies.append(reply)
        return replies

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
        answers = [hub_pb2.Answer.FromString(p) for p in
                   s.scalars(select(AnswerRow.payload).where(AnswerRow.sample_id == sample_id)
                             .order_by(AnswerRow.id)).all()]
        labour = float(sum(a.operations for a in answers))
        reply = hub_pb2.SampleReply(sample_id=sample_id, device_id=row.device_id, batch_id=row.batch_id,
                                    reply_id=str(uuid.uuid4()), status=REPLY_STATUS[status], answers=answers,
                                    labour=labour, **self._declines(s, sample_id))
        if answers:
            reply.aggregated.CopyFrom(self._aggregate(s, row, answers))
        s.add(Reply(sample_id=sample_id, reply_id=reply.reply_id, device_id=row.device_id, status=status,
                    aggregator=row.aggregator, class_id=_class_of(reply.aggregated) if answers else None,
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
        aggregator = get_aggregator(row.aggregator)
        history: tuple[tuple[str, str, int], ...] = ()
        if aggregator.needs_history and self.history:
            history = tuple(s.execute(
                select(AnswerRow.sample_id, AnswerRow.annotator_id, AnswerRow.class_id)
                .where(AnswerRow.class_id.is_not(None)).order_by(AnswerRow.id.desc()).limit(self.history)).tuples())
        output = hub_pb2.ModelOutput.FromString(row.model_output)
        data = AggregationInput(row.id, tuple(answers), row.m, self.num_classes,
                                tuple(output.class_probabilities), history)
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

    def undelivered(self, transport: str, limit: int = 1000) -> list[hub_pb2.SampleReply]:
        with self.session() as s:
            payloads = s.scalars(select(Reply.payload).where(Reply.transport == transport,
                                                             Reply.delivered.is_(False))
                                 .order_by(Reply.created_at).limit(limit)).all()
        return [hub_pb2.SampleReply.FromString(p) for p in payloads]

    def mark_delivered(self, sample_ids: Sequence[str]) -> None:
        if sample_ids:
            with self.session() as s:
                s.execute(update(Reply).where(Reply.sample_id.in_(list(sample_ids))).values(delivered=True))

    # --- model bundles ------------------------------------------------------------------------------------

    def add_bundle(self, record: BundleRecord) -> None:
        with self.session() as s:
            s.merge(Bundle(name=record.name, version=record.version, sha256=record.sha256, size=record.size,
                           signature=record.signature, path=record.path, published_at=record.published_at,
                           fetch_uri=record.fetch_uri))

    def bundle(self, name: str, version: str = "") -> BundleRecord | None:
        """The named version, or the latest published one when `version` is empty."""
        with self.session() as s:
            query = select(Bundle).where(Bundle.name == name)
            query = query.where(Bundle.version == version) if version else query.order_by(
                Bundle.published_at.desc()).limit(1)
            row = s.scalars(query).first()
            if row is None:
                return None
            return BundleRecord(row.name, row.version, row.sha256, row.size, row.signature, row.path,
                                row.published_at, row.fetch_uri or "")

    # --- accounting -------------------------------------------------------------------------------------

    def labour_of_device(self, device_id: str) -> tuple[float, int]:
        """(sum of L0 actually spent, samples replied) for Eq. 13."""
        with self.session() as s:
            device = s.get(Device, device_id)
            return (device.labour_spent, device.samples_replied) if device else (0.0, 0)

    def labour_of_batch(self, batch_id: str) -> tuple[float, float]:
        """(labour reserved against the budget, the budget; 0 = unlimited)."""
        with self.session() as s:
            batch = s.get(Batch, batch_id)
            return (batch.labour_reserved, batch.labour_budget) if batch else (0.0, 0.0)

    def count(self, model: type[Base], **where: object) -> int:
        with self.session() as s:
            query = select(func.count()).select_from(model)
            for key, value in where.items():
                query = query.where(getattr(model, key) == value)
            return int(s.scalar(query) or 0)


def _class_of(label: hub_pb2.AggregatedLabel) -> int | None:
    return label.class_id if label.WhichOneof("label") == "class_id" else None


def bundle_notice(row: BundleRecord) -> hub_pb2.ModelUpdate:
    notice = hub_pb2.ModelUpdate(bundle_name=row.name, version=row.version, sha256=row.sha256, size=row.size,
                                 signature=row.signature, fetch_uri=row.fetch_uri)
    notice.published_at.FromNanoseconds(int(row.published_at * 1e9))
    return notice
