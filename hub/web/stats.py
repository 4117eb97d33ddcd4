"""What the operator view shows, read from the knowledge base (so every hub process shows the same)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from hgen.hub.gold import GOLD_DEVICE, GoldBook
from hgen.hub.kb.models import OPEN_STATES, Annotator, AnswerRow, Batch, Device, Reply, Sample, TaskEvent
from hgen.hub.kb.store import GOLD_TRANSPORT, KnowledgeBase
from hgen.hub.web.views import view_of_answer
from hgen.protos import hub_pb2


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    labour_spent: float
    labour_budget: float | None  # None: some batch had no budget (unlimited)
    samples_replied: int
    bundle: str  # name and version the device last reported (status) or last sent samples with


@dataclass(frozen=True)
class AnnotatorRow:
    annotator_id: str
    kind: str
    answers: int
    released: int
    agreement: float | None  # share of class answers equal to the aggregated label
    gold_accuracy: float | None
    gold_rated: int  # gold tasks answered or given back (a miss)
    median_seconds: float | None
    paused_reason: str | None


@dataclass(frozen=True)
class Overview:
    queue_depth: int
    answers_last_hour: int
    devices: list[DeviceRow]
    annotators: list[AnnotatorRow]
    recent_answers: list[tuple[str, str, str, float]]  # annotator, sample, label text, seconds


def overview(kb: KnowledgeBase, gold: GoldBook, now: float, class_names: tuple[str, ...]) -> Overview:
    with kb.session() as s:
        queue = s.scalar(select(func.count()).select_from(Sample)
                         .where(Sample.status.in_(OPEN_STATES), Sample.transport != GOLD_TRANSPORT)) or 0
        per_hour = s.scalar(select(func.count()).select_from(AnswerRow)
                            .where(AnswerRow.submitted_at > now - 3600.0)) or 0
        recent = s.execute(select(AnswerRow.annotator_id, AnswerRow.sample_id, AnswerRow.payload,
                                  AnswerRow.latency_s).order_by(AnswerRow.id.desc()).limit(10)).all()
    return Overview(int(queue), int(per_hour), devices(kb), annotators(kb, gold),
                    [(a, sid, label_text(hub_pb2.Answer.FromString(p), class_names), lat)
                     for a, sid, p, lat in recent])


def label_text(answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
    """The answer as its view describes it ("-" for one without a label)."""
    view = view_of_answer(answer)
    return view.describe(answer, class_names) if view is not None else "-"


def devices(kb: KnowledgeBase) -> list[DeviceRow]:
    rows = []
    with kb.session() as s:
        budgets = dict(s.execute(select(Batch.device_id, func.sum(Batch.labour_budget)).group_by(Batch.device_id)).all())
        unlimited = set(s.scalars(select(Batch.device_id).where(Batch.labour_budget <= 0)).all())
        for device in s.scalars(select(Device).where(Device.id != GOLD_DEVICE).order_by(Device.id)).all():
            rows.append(DeviceRow(device.id, device.labour_spent,
                                  None if device.id in unlimited else float(budgets.get(device.id) or 0.0),
                                  device.samples_replied, _bundle_of(s, device)))
    return rows


def _bundle_of(s, device: Device) -> str:  # type: ignore[no-untyped-def]
    if device.last_status:
        status = hub_pb2.DeviceStatus.FromString(device.last_status)
        if status.bundle_name:
            return f"{status.bundle_name} {status.bundle_version}"
    last = s.execute(select(Sample.bundle_name, Sample.bundle_version).where(Sample.device_id == device.id)
                     .order_by(Sample.received_at.desc()).limit(1)).first()
    return f"{last[0]} {last[1]}" if last else "-"


def annotators(kb: KnowledgeBase, gold: GoldBook) -> list[AnnotatorRow]:
    with kb.session() as s:
        people = s.execute(select(Annotator.id, Annotator.kind).order_by(Annotator.id)).all()
        answered = s.execute(select(AnswerRow.annotator_id, AnswerRow.class_id, Reply.class_id, AnswerRow.latency_s)
                             .outerjoin(Reply, Reply.sample_id == AnswerRow.sample_id)).all()
        released = dict(s.execute(select(TaskEvent.annotator_id, func.count()).group_by(TaskEvent.annotator_id)).all())
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # answers, comparable, agreeing
    latencies: dict[str, list[float]] = defaultdict(list)
    for who, given, final, latency in answered:
        counts[who][0] += 1
        latencies[who].append(latency)
        if given is not None and final is not None:
            counts[who][1] += 1
            counts[who][2] += int(given == final)
    rows = []
    for who, kind in people:
        total, comparable, agreeing = counts[who]
        rating = gold.rating(who)
        times = sorted(latencies[who])
        rows.append(AnnotatorRow(who, kind, total, int(released.get(who, 0)),
                                 agreeing / comparable if comparable else None, rating.accuracy, rating.rated,
                                 times[len(times) // 2] if times else None, rating.paused_reason))
    return rows
