"""Retrain bookkeeping in the knowledge base: model versions, retrain runs, leases, and the human labels per model.

Everything a retrain needs to resume or explain itself is here, so the operator view, the CLI and the worker of
any hub process read the same history. A lease row per model (`retrain_leases`) is what keeps hub processes
sharing one database from retraining the same model at once: a run is only queued under its model's lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hgen.hub.errors import KnowledgeBaseError, RetrainBusyError, RetrainError, VersionTakenError
from hgen.hub.kb.models import AnnotatorPause, AnswerRow, ModelVersion, Reply, RetrainLease, RetrainRun, Sample
from hgen.hub.kb.store import GOLD_TRANSPORT, BundleRecord, KnowledgeBase, bundle_row
from hgen.protos.kinds import wire_kinds
from hgen.runtime.bundle.manifest import version_key

HUMAN_STATES = ("answered", "partial")


def drawn_kinds() -> tuple[int, ...]:
    """Wire kinds whose people draw (boxes, regions) rather than name a class, by their descriptors' label form."""
    return wire_kinds(lambda kind: kind.label != "class_id")


def human_label() -> Any:
    """A reply that is a human label: a class, or an answered/partial reply of a sample whose people draw that a
    majority of the people asked stands behind (`Reply.agreed`, hgen.hub.kb.closing.agreed_drawing; an empty
    drawing is a label too: "nothing there"; replies made before it, NULL, stay labels)."""
    return or_(Reply.class_id.is_not(None), and_(Sample.hdnn_kind.in_(drawn_kinds()), agreed_drawing()))


def agreed_drawing() -> Any:
    """SQL: a drawing a majority of the people asked stands behind (hgen.hub.kb.closing.agreed_drawing), or one
    replied before the hub judged that (NULL: kept, as it was made)."""
    return Reply.agreed.is_not(False)


def of_model(name: str) -> tuple[Any, ...]:
    """Replies people gave for device samples of model `name`: gold tasks excluded, and replies any currently paused
    annotator answered (failed gold, or an operator's decision): pausing used to stop their tasks while their
    earlier answers stayed in every retrain. Resuming them brings those replies back."""
    paused = (select(AnswerRow.id).join(AnnotatorPause, AnnotatorPause.annotator_id == AnswerRow.annotator_id)
              .where(AnswerRow.sample_id == Sample.id))
    return (Sample.bundle_name == name, Sample.transport != GOLD_TRANSPORT, Reply.status.in_(HUMAN_STATES),
            ~paused.exists())
ACTIVE_STATES = ("queued", "running")


# A lease expiring further ahead than this was written by a clock that ran ahead (an NTP step back since): taken as
# expired, or a crashed hub's lease blocked its model's retrains for the whole step. Leases live a minute
# (`worker.LEASE_TTL_S`); the margin is for hub processes whose clocks differ a little.
LEASE_HORIZON_S = 3600.0


def _live(now: float) -> Any:
    """SQL: the lease is live at `now` (not expired, and not from a clock that ran ahead)."""
    return and_(RetrainLease.expires_at > now, RetrainLease.expires_at <= now + LEASE_HORIZON_S)


@dataclass(frozen=True)
class VersionRecord:
    """A model version: where its Keras file and signed bundle are, and its calibrated gate."""

    name: str
    version: str
    keras_path: str
    bundle_dir: str
    tau: float
    temperature: float
    created_at: float
    retrain_id: int | None = None


@dataclass(frozen=True)
class RunRecord:
    """One retrain attempt as stored; `metrics` holds the measured numbers, `error` why it failed or was refused."""

    id: int
    model_name: str
    status: str
    trigger: str
    requested_at: float
    started_at: float | None
    finished_at: float | None
    from_version: str
    to_version: str | None
    cutoff: float
    samples_used: int
    filtered_out: int
    metrics: dict[str, Any]
    error: str | None
    research: bool = False  # the operator asked for a new plan and tau (a re-search), not only new weights

    @property
    def done(self) -> bool:
        return self.status not in ACTIVE_STATES

    @property
    def seconds(self) -> float | None:
        return None if self.finished_at is None or self.started_at is None else self.finished_at - self.started_at


@dataclass(frozen=True)
class LeaseRecord:
    """Who holds a model's retrain lease, for which run, and until when (unless renewed)."""

    model_name: str
    holder: str
    run_id: int | None
    acquired_at: float
    expires_at: float


@dataclass(frozen=True)
class LabelledSample:
    """A human-labelled sample of a model: the stored image and the aggregated class."""

    sample_id: str
    class_id: int
    image_format: int
    height: int
    width: int
    channels: int
    image: bytes


def _run(row: RetrainRun) -> RunRecord:
    return RunRecord(row.id, row.model_name, row.status, row.trigger, row.requested_at, row.started_at,
                     row.finished_at, row.from_version, row.to_version, row.cutoff, row.samples_used,
                     row.filtered_out, json.loads(row.metrics or "{}"), row.error, bool(row.research))


def _lease(row: RetrainLease | None) -> LeaseRecord | None:
    return None if row is None else LeaseRecord(row.model_name, row.holder, row.run_id, row.acquired_at,
                                                 row.expires_at)


def _version(row: ModelVersion) -> VersionRecord:
    return VersionRecord(row.name, row.version, row.keras_path, row.bundle_dir, row.tau, row.temperature,
                         row.created_at, row.retrain_id)


class RetrainStore:
    """Typed access to the retrain tables on top of the knowledge base's sessions."""

    def __init__(self, kb: KnowledgeBase, clock: Callable[[], float] = time.time) -> None:
        self.kb = kb
        self.clock = clock

    # --- versions ---------------------------------------------------------------------------------------------

    def current_version(self, name: str) -> VersionRecord | None:
        """The deployed version: the highest version number (every new version is above the one it replaced)."""
        found = self.versions(name)
        return found[0] if found else None

    def versions(self, name: str | None = None) -> list[VersionRecord]:
        """Newest first by version number, then by time: not by time alone, as hosts' clocks may disagree."""
        with self.kb.session() as s:
            query = select(ModelVersion)
            if name is not None:
                query = query.where(ModelVersion.name == name)
            rows = [_version(r) for r in s.scalars(query).all()]
        return sorted(rows, key=lambda v: (version_key(v.version), v.created_at), reverse=True)

    def add_version(self, record: VersionRecord, bundles: Sequence[BundleRecord] = (),
                    published: tuple[int, dict[str, Any]] | None = None) -> None:
        """The version and its bundles in one transaction, devices never see part of a release; `published`
        (run id, metrics) also marks that run published in it, so a version never exists under a failed run.

        VersionTakenError when the version exists, and RetrainError when the run is no longer running (another hub
        took its lease over): a hub cut off mid-retrain used to publish anyway, and its version replaced the other
        hub's version of the same number, which devices might already run."""
        try:
            with self.kb.session() as s:
                if s.get(ModelVersion, (record.name, record.version)) is not None:
                    raise VersionTakenError(f"version {record.version} of {record.name!r} exists already "
                                            "(published by another hub meanwhile?): nothing published")
                if published is not None and not s.execute(update(RetrainRun).where(
                        RetrainRun.id == published[0], RetrainRun.status == "running").values(
                        status="published", finished_at=self.clock(), to_version=record.version,
                        metrics=json.dumps(published[1]))).rowcount:
                    raise RetrainError(f"run {published[0]} of {record.name!r} is no longer running (its lease "
                                       f"was taken over by another hub?): version {record.version} not published")
                for bundle in bundles:
                    s.merge(bundle_row(bundle))
                s.add(ModelVersion(name=record.name, version=record.version, keras_path=record.keras_path,
                                   bundle_dir=record.bundle_dir, tau=record.tau, temperature=record.temperature,
                                   retrain_id=record.retrain_id, created_at=record.created_at))
        except IntegrityError:  # the same version committed by another hub between the check and the insert
            raise VersionTakenError(f"version {record.version} of {record.name!r} exists already (published by "
                                    "another hub meanwhile?): nothing published") from None

    # --- runs -------------------------------------------------------------------------------------------------

    def create_run(self, name: str, trigger: str, from_version: str, *, research: bool = False) -> RunRecord:
        """Queue a run without a lease (callers that coordinate with other hubs use `claim_run`)."""
        with self.kb.session() as s:
            return self._add_run(s, name, trigger, from_version, research)

    def _add_run(self, s: Session, name: str, trigger: str, from_version: str, research: bool = False) -> RunRecord:
        """Its cutoff is the newest human label now, so labels after it count towards the next retrain."""
        row = RetrainRun(model_name=name, status="queued", trigger=trigger, requested_at=self.clock(),
                         from_version=from_version, cutoff=self._latest_label_time(s, name), samples_used=0,
                         filtered_out=0, metrics="{}", research=research)
        s.add(row)
        s.flush()
        return _run(row)

    def start_run(self, run_id: int) -> None:
        with self.kb.session() as s:
            s.execute(update(RetrainRun).where(RetrainRun.id == run_id)
                      .values(status="running", started_at=self.clock()))

    def finish_run(self, run_id: int, status: str, *, to_version: str | None = None, samples_used: int = 0,
                   filtered_out: int = 0, metrics: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self.kb.session() as s:
            s.execute(update(RetrainRun).where(RetrainRun.id == run_id).values(
                status=status, finished_at=self.clock(), to_version=to_version, samples_used=samples_used,
                filtered_out=filtered_out, metrics=json.dumps(metrics or {}), error=error))

    def run(self, run_id: int) -> RunRecord | None:
        with self.kb.session() as s:
            row = s.get(RetrainRun, run_id)
            return _run(row) if row is not None else None

    def runs(self, name: str | None = None, limit: int = 50) -> list[RunRecord]:
        with self.kb.session() as s:
            query = select(RetrainRun).order_by(RetrainRun.id.desc()).limit(limit)
            if name is not None:
                query = query.where(RetrainRun.model_name == name)
            return [_run(r) for r in s.scalars(query).all()]

    def fail_if_active(self, run_id: int, reason: str) -> bool:
        """Fail a queued/running run; False when it already ended (e.g. failed by a hub that took it over)."""
        with self.kb.session() as s:
            return bool(s.execute(update(RetrainRun).where(RetrainRun.id == run_id,
                                                           RetrainRun.status.in_(ACTIVE_STATES))
                                  .values(status="failed", finished_at=self.clock(), error=reason)).rowcount)

    def abandon_active(self, reason: str) -> int:
        """Mark runs a stopped hub left queued/running as failed (their work is lost, the model unchanged); runs
        under a live lease belong to a running hub process and are left alone."""
        now = self.clock()
        with self.kb.session() as s:
            live = select(RetrainLease.run_id).where(_live(now), RetrainLease.run_id.is_not(None))
            return s.execute(update(RetrainRun).where(RetrainRun.status.in_(ACTIVE_STATES), RetrainRun.id.not_in(live))
                             .values(status="failed", finished_at=now, error=reason)).rowcount

    # --- leases: one retrain per model across hub processes ------------------------------------------------------

    def claim_run(self, name: str, trigger: str, from_version: str, holder: str, ttl_s: float, *,
                  research: bool = False) -> RunRecord:
        """Take `name`'s lease (free, expired, or already `holder`'s) and queue a run under it, in one transaction.

        RetrainBusyError (naming the holder and its run) when another holder's lease is live; a run left by a
        holder whose lease expired (a crashed hub) is marked failed as it is taken over."""
        try:
            with self.kb.session() as s:
                self._take_lease(s, name, holder, ttl_s)
                run = self._add_run(s, name, trigger, from_version, research)
                s.execute(update(RetrainLease).where(RetrainLease.model_name == name).values(run_id=run.id))
                return run
        except IntegrityError:  # another process inserted the first lease of this model at the same moment
            raise RetrainBusyError(self._busy_message(name, self.live_lease(name))) from None

    def renew_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Push the expiry `ttl_s` ahead; False when `holder` no longer holds it (expired and taken over)."""
        with self.kb.session() as s:
            return bool(s.execute(update(RetrainLease)
                                  .where(RetrainLease.model_name == name, RetrainLease.holder == holder)
                                  .values(expires_at=self.clock() + ttl_s)).rowcount)

    def release_lease(self, name: str, holder: str) -> None:
        with self.kb.session() as s:
            s.execute(delete(RetrainLease).where(RetrainLease.model_name == name, RetrainLease.holder == holder))

    def live_lease(self, name: str) -> LeaseRecord | None:
        """The unexpired lease of `name`, if any."""
        with self.kb.session() as s:
            lease = _lease(s.get(RetrainLease, name))
        now = self.clock()
        return lease if lease is not None and now < lease.expires_at <= now + LEASE_HORIZON_S else None

    def _take_lease(self, s: Session, name: str, holder: str, ttl_s: float) -> None:
        now = self.clock()
        before = s.execute(select(RetrainLease.holder, RetrainLease.expires_at)
                           .where(RetrainLease.model_name == name)).first()
        values = {"holder": holder, "run_id": None, "acquired_at": now, "expires_at": now + ttl_s}
        if before is None:
            s.add(RetrainLease(model_name=name, **values))
            s.flush()  # IntegrityError here when another process got there first
            return
        taken = s.execute(update(RetrainLease).where(
            RetrainLease.model_name == name, or_(~_live(now), RetrainLease.holder == holder))
            .values(**values)).rowcount  # conditional: of two processes taking one expired lease, one wins
        if not taken:
            raise RetrainBusyError(self._busy_message(name, _lease(s.get(RetrainLease, name))))
        if before.holder != holder:
            s.execute(update(RetrainRun).where(RetrainRun.model_name == name,
                                               RetrainRun.status.in_(ACTIVE_STATES)).values(
                status="failed", finished_at=now,
                error=f"{before.holder} stopped renewing its retrain lease (crashed or cut off); taken over by "
                      f"{holder}"))

    def _busy_message(self, name: str, lease: LeaseRecord | None) -> str:
        if lease is None:
            return f"a retrain of {name!r} is already queued or running on another hub; one at a time per model"
        run = lease.run_id if lease.run_id is not None else "(starting)"
        left = max(0.0, lease.expires_at - self.clock())
        return (f"retrain {run} of {name!r} is already queued or running on {lease.holder} (its lease ends in "
                f"{left:.0f} s unless renewed); one at a time per model")

    # --- human labels -----------------------------------------------------------------------------------------

    def _labels_query(self, name: str):  # type: ignore[no-untyped-def]
        return (select(Reply.sample_id).join(Sample, Sample.id == Reply.sample_id)
                .where(*of_model(name), human_label()))

    def _latest_label_time(self, s: Any, name: str) -> float:
        query = (select(func.max(Reply.created_at)).join(Sample, Sample.id == Reply.sample_id)
                 .where(*of_model(name), human_label()))
        return float(s.scalar(query) or 0.0)

    def last_cutoff(self, name: str) -> float:
        with self.kb.session() as s:
            return float(s.scalar(select(func.max(RetrainRun.cutoff)).where(RetrainRun.model_name == name)) or 0.0)

    def new_label_count(self, name: str) -> int:
        """Human-labelled samples of `name` replied after the last retrain's cutoff: what the trigger counts."""
        cutoff = self.last_cutoff(name)
        with self.kb.session() as s:
            sub = self._labels_query(name).where(Reply.created_at > cutoff).subquery()
            return int(s.scalar(select(func.count()).select_from(sub)) or 0)

    def labelled_samples(self, name: str, up_to: float, newest: int | None = None) -> list[LabelledSample]:
        """Every human-labelled sample of `name` replied up to `up_to` (all knowledge so far, not only new; the
        `newest` of them when set)."""
        rows = labelled_rows(self.kb, name, up_to, Reply.class_id, Reply.class_id.is_not(None), newest=newest)
        return [LabelledSample(r[0], int(r[1]), *r[2:]) for r in rows]


def labelled_query(name: str, *columns: Any) -> Any:
    """SELECT `columns` of `name`'s samples joined to their replies, the replies people gave (`of_model`): what a
    retrain reads its labels from, and an export."""
    return select(*columns).join(Reply, Reply.sample_id == Sample.id).where(*of_model(name))


def labelled_rows(kb: KnowledgeBase, name: str, up_to: float, label: Any, *where: Any,
                  newest: int | None = None) -> list[tuple[Any, ...]]:
    """(sample id, `label`, image format, height, width, channels, image bytes) of every human-labelled sample of
    `name` replied up to `up_to` that also meets `where`, or of the `newest` of them (a retrain decodes all it
    reads at once: an unbounded knowledge base outgrew the hub's memory); the kinds differ only in the label
    column and filter. Ordered by sample id, so the same labels come in the same order."""
    query = labelled_query(name, Sample.id, label, Sample.image_format, Sample.height, Sample.width,
                           Sample.channels, Sample.image_bytes, Sample.image_path).where(*where,
                                                                                         Reply.created_at <= up_to)
    if newest is not None:
        query = query.order_by(Reply.created_at.desc(), Sample.id).limit(newest)
    with kb.session() as s:
        rows = sorted(s.execute(query).all(), key=lambda row: row[0])
    return [(*r[:6], _image(kb, r[6], r[7])) for r in rows]


def _image(kb: KnowledgeBase, inline: bytes | None, relative: str | None) -> bytes:
    """The stored bytes, or b"" when its file is gone (deleted, or on another hub's disk): that sample is left out
    of the retrain (`data.decode_many`), where it used to fail this retrain and every later one."""
    try:
        return kb.images.get(inline, relative)
    except (OSError, KnowledgeBaseError):
        return b""
