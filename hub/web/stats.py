"""What the operator view shows, read from the knowledge base (so every hub process shows the same).

Every figure is computed by the database (COUNT / SUM / GROUP BY over indexes, migration 0012) or over a bounded
window, and only one row per device and per annotator (plus the ten recent answers) reaches Python: on SQLite
every transaction holds the write lock, so a page that read the whole history stalled every device and annotator
for seconds. Agreement and median time are over each annotator's last `WINDOW` answers. The all-time totals
(answers, skips, budgets, gold record) stay exact: counted from indexes alone, in short transactions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from hgen.hub.gold import GOLD_DEVICE, GoldRating, gold_ratings
from hgen.hub.kb.bundles import running_bundle
from hgen.hub.kb.models import OPEN_STATES, Annotator, AnswerRow, Batch, Device, Reply, Sample, TaskEvent
from hgen.hub.kb.store import GOLD_TRANSPORT, KnowledgeBase
from hgen.hub.web.views import view_of_answer
from hgen.protos import hub_pb2

WINDOW = 500  # an annotator's latest answers that agreement and median time are computed over
RECENT = 10  # answers listed under "Recent answers"


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    labour_spent: float
    labour_budget: float | None  # None: some batch had no budget (unlimited)
    samples_replied: int
    bundle: str  # name and version the device last reported (status) or last sent samples with
    agent: str = "-"  # its agent's release and protocol revision (`agent_of`), "-" before any status


@dataclass(frozen=True)
class AnnotatorRow:
    annotator_id: str
    kind: str
    answers: int
    released: int
    agreement: float | None  # share of class answers equal to the aggregated label (last WINDOW answers)
    gold_accuracy: float | None
    gold_rated: int  # gold tasks answered or given back (a miss)
    median_seconds: float | None  # over the last WINDOW answers
    paused_reason: str | None


@dataclass(frozen=True)
class Overview:
    queue_depth: int
    answers_last_hour: int
    devices: list[DeviceRow]
    annotators: list[AnnotatorRow]
    recent_answers: list[tuple[str, str, str, float]]  # annotator, sample, label text, seconds
    window: int  # answers per annotator behind agreement and median time (WINDOW)


def overview(kb: KnowledgeBase, now: float, class_names: tuple[str, ...]) -> Overview:
    with kb.session() as s:
        queue = s.scalar(select(func.count()).select_from(Sample)
                         .where(Sample.status.in_(OPEN_STATES), Sample.transport != GOLD_TRANSPORT)) or 0
        per_hour = s.scalar(select(func.count()).select_from(AnswerRow)
                            .where(AnswerRow.submitted_at > now - 3600.0)) or 0  # ix_answers_submitted_at
        recent = s.execute(select(AnswerRow.annotator_id, AnswerRow.sample_id, AnswerRow.payload,
                                  AnswerRow.latency_s).order_by(AnswerRow.id.desc()).limit(RECENT)).all()
    return Overview(int(queue), int(per_hour), devices(kb), annotators(kb),
                    [(a, sid, label_text(hub_pb2.Answer.FromString(p), class_names), lat)
                     for a, sid, p, lat in recent], WINDOW)


def label_text(answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
    """The answer as its view describes it ("-" for one without a label)."""
    view = view_of_answer(answer)
    return view.describe(answer, class_names) if view is not None else "-"


# --- devices ------------------------------------------------------------------------------------------------------


def devices(kb: KnowledgeBase) -> list[DeviceRow]:
    """Budgets summed by the database from ix_batches_device_budget alone (no batch row is read); the bundle is one
    index seek per device that has not reported one."""
    with kb.session() as s:
        fleet = s.execute(select(Device.id, Device.labour_spent, Device.samples_replied, Device.last_status)
                          .where(Device.id != GOLD_DEVICE).order_by(Device.id)).all()
        budgets = {device_id: None if least <= 0 else float(total) for device_id, total, least in s.execute(
            select(Batch.device_id, func.sum(Batch.labour_budget), func.min(Batch.labour_budget))
            .group_by(Batch.device_id))}  # None: some batch was unlimited (budget 0)
        statuses = [(row, hub_pb2.DeviceStatus.FromString(row[3]) if row[3] else None) for row in fleet]
        return [DeviceRow(device_id, spent, budgets.get(device_id, 0.0), replied,
                          _bundle_of(s, device_id, status), agent_of(status))
                for (device_id, spent, replied, _), status in statuses]


def agent_of(status: hub_pb2.DeviceStatus | None) -> str:
    """What the device's last status says of its agent: an upgrade of the hub leaves devices on older agents, and
    the operator sees which (`hgen.hub.transports.agent_versions`)."""
    if status is None:
        return "-"
    if not status.protocol_revision:
        return "older agent (no version reported)"
    return f"{status.agent_version[:64] or 'unknown'} (rev {status.protocol_revision})"


def _bundle_of(s: Session, device_id: str, status: hub_pb2.DeviceStatus | None) -> str:
    """The bundle of its last status report, else of its newest sample (one seek in ix_samples_device_received)."""
    running = running_bundle(s, device_id, status)
    return f"{running[0]} {running[1]}" if running else "-"


# --- annotators ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Work:
    """One annotator's figures from the database."""

    answers: int
    released: int
    agreement: float | None
    median_seconds: float | None


def annotators(kb: KnowledgeBase) -> list[AnnotatorRow]:
    """Everyone's gold record in grouped queries, then one short transaction per annotator for the rest, so writers
    get the lock in between."""
    with kb.session() as s:
        people = s.execute(select(Annotator.id, Annotator.kind).order_by(Annotator.id)).all()
        ratings = gold_ratings(s)
    rows = []
    for who, kind in people:
        with kb.session() as s:
            work = _work_of(s, who)
        rating = ratings.get(who) or GoldRating(who, 0, 0, None)
        rows.append(AnnotatorRow(who, kind, work.answers, work.released, work.agreement, rating.accuracy,
                                 rating.rated, work.median_seconds, rating.paused_reason))
    return rows


def _work_of(s: Session, who: str) -> _Work:
    """All-time counts (index-only, ix_answers_annotator_id / ix_task_events_annotator_id), and agreement and median
    time over the annotator's last WINDOW answers."""
    answers = s.scalar(select(func.count()).select_from(AnswerRow).where(AnswerRow.annotator_id == who)) or 0
    released = s.scalar(select(func.count()).select_from(TaskEvent).where(TaskEvent.annotator_id == who)) or 0
    latest = (select(AnswerRow.sample_id, AnswerRow.class_id, AnswerRow.latency_s)
              .where(AnswerRow.annotator_id == who).order_by(AnswerRow.id.desc()).limit(WINDOW).subquery())
    window, comparable, agreeing = s.execute(
        select(func.count(),
               func.sum(case((and_(latest.c.class_id.is_not(None), Reply.class_id.is_not(None)), 1), else_=0)),
               func.sum(case((latest.c.class_id == Reply.class_id, 1), else_=0)))
        .select_from(latest).outerjoin(Reply, Reply.sample_id == latest.c.sample_id)).one()
    median = s.scalar(select(latest.c.latency_s).order_by(latest.c.latency_s)
                      .offset(int(window) // 2).limit(1)) if window else None  # the upper median, as before
    return _Work(int(answers), int(released), int(agreeing or 0) / int(comparable) if comparable else None,
                 median)
