"""The knowledge base: every state transition of a sample is one short transaction here (tasks in `tasks.py`,
answers and closing in `closing.py`, removing expired samples' images in `retention.py`, emptying old bundle
archives' copies in `bundles.py`, all mixed into `KnowledgeBase`).

Lifecycle: received -> assigned (1..m annotators hold a task) -> answered (m answers) or, at the deadline,
partial (some answers) / expired (none). Every transition is a conditional UPDATE whose row count says who
won, so several hub processes on one database never assign a slot twice or close a sample twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from hgen.hub.aggregators import Aggregator, get_aggregator
from hgen.hub.errors import KnowledgeBaseIntegrityError
from hgen.hub.kb.bundles import BundleArchives
from hgen.hub.kb.closing import Closing
from hgen.hub.kb.engine import make_engine, sqlite_path
from hgen.hub.kb.images import ImageStore, UnreadableSamples
from hgen.hub.kb.intake import Admission, DeviceIntake, admit, count_stored, read_intake
from hgen.hub.kb.migrate import upgrade
from hgen.hub.kb.models import Annotator, Base, Batch, Bundle, Device, Sample
from hgen.hub.kb.retention import Retention
from hgen.hub.kb.tasks import TaskQueue
from hgen.hub.kb.tasks import GOLD_TRANSPORT, Task  # noqa: F401 (callers import them here)
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import version_key

if TYPE_CHECKING:
    from hgen.hub.config import KnowledgeBaseConfig


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
class BundleRecord:
    name: str
    version: str
    sha256: str
    size: int
    signature: bytes
    path: str
    published_at: float
    fetch_uri: str = ""
    target: str | None = None  # None: recorded before targets were (read it from the file)
    archive: bytes | None = field(default=None, repr=False, compare=False)  # only when recording


class KnowledgeBase(TaskQueue, Closing, Retention, BundleArchives):
    """SQLAlchemy-backed store shared by every hub process (no hub state lives anywhere else)."""

    def __init__(self, engine: Engine, images: ImageStore, *, num_classes: int = 10,
                 aggregator: Callable[[str], Aggregator] = get_aggregator,
                 clock: Callable[[], float] = time.time) -> None:
        """`aggregator`: name -> the strategy with the hub's options for it (hub.yaml aggregator_options; by default
        each strategy's defaults), so an option like dawid_skene's history reaches the strategy that closes a sample."""
        self.engine = engine
        self.images = images
        self.num_classes = num_classes
        self.aggregator = aggregator
        self.clock = clock
        self.unreadable = UnreadableSamples(clock)  # samples whose image this process could not read lately
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def of_config(cls, kbc: KnowledgeBaseConfig, **kwargs: object) -> KnowledgeBase:
        """Open the configured knowledge base (`knowledge_base:` of the hub's config), as every hub verb does."""
        return cls.open(kbc.url, image_dir=kbc.image_dir, inline_max_bytes=kbc.inline_image_max_bytes,
                        migrate=kbc.migrate, **kwargs)

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
        key = row.id  # type: ignore[attr-defined]
        try:
            with self.session() as s:
                if s.get(type(row), key) is None:
                    s.add(row)
        except IntegrityError as exc:
            self._lost_race_or_raise(type(row), key, exc)

    def _lost_race_or_raise(self, model: type[Base], key: str, exc: IntegrityError) -> None:
        """After a failed insert: another hub inserting the same row between our check and our insert is fine (the
        row is there now); any other broken constraint (a foreign key to a missing row) is raised, never hidden."""
        if not self._stored(model, key):
            raise self._integrity_error(model, key, exc) from None

    def _stored(self, model: type[Base], key: str) -> bool:
        with self.session() as s:
            return s.get(model, key) is not None

    @staticmethod
    def _integrity_error(model: type[Base], key: str, exc: IntegrityError) -> KnowledgeBaseIntegrityError:
        return KnowledgeBaseIntegrityError(f"cannot store {model.__tablename__} {key!r}: {exc.orig}")

    # --- ingest -----------------------------------------------------------------------------------------

    def ensure_batch(self, request: hub_pb2.AnnotationRequest, m: int, deadline: float, budget: float) -> str:
        """Store the batch unless it is there; the device it belongs to (another device's batch id must not spend
        that batch's labour budget)."""
        self._insert_ignore(Batch(id=request.batch_id, device_id=request.device_id, m=m, deadline=deadline,
                                  labour_budget=budget, labour_reserved=0.0, created_at=self.clock()))
        with self.session() as s:
            return str(s.scalar(select(Batch.device_id).where(Batch.id == request.batch_id)))

    def sample_exists(self, sample_id: str) -> bool:
        with self.session() as s:
            return s.get(Sample, sample_id) is not None

    def add_sample(self, new: NewSample, admission: Admission | None = None) -> str:
        """Insert the sample and reserve its labour: 'accepted', 'duplicate', 'over_budget', or 'foreign' for
        another device's sample id (a duplicate's stored reply is resent: it must go to its own device only).
        A new sample is held to its device's limits first (`admission`, checked under the device's row lock, whose
        error is raised: hgen.hub.kb.intake), and counted in the device's minute when stored."""
        device_id, now = new.sample.device_id, self.clock()
        row: Sample | None = None
        try:
            with self.session() as s:
                if (stored := s.get(Sample, new.sample.sample_id)) is not None:
                    return "duplicate" if stored.device_id == device_id else "foreign"
                admit(s, device_id, now, admission)
                if not self._reserve_labour(s, new.batch_id, new.labour):
                    return "over_budget"
                s.add(row := self._sample_row(new, now))
                s.flush()  # the sample row before its count: a lost insert race rolls both back
                count_stored(s, device_id, now, len(new.sample.image.data))
        except IntegrityError as exc:
            if self._stored(Sample, new.sample.sample_id):
                return "duplicate"  # the same id committed by another hub a moment ago
            if row is not None and row.image_path is not None:  # no row names it: checked just above
                self.images.discard(row.image_path)
            raise self._integrity_error(Sample, new.sample.sample_id, exc) from None
        except Exception:
            self._discard_unstored(new.sample.sample_id, row)
            raise
        return "accepted"

    def _discard_unstored(self, sample_id: str, row: Sample | None) -> None:
        """After a failed transaction (a full database): the image file written for it goes too, unless a row
        names it after all (the same sample stored by another hub process, whose file has the same name)."""
        if row is None or row.image_path is None:
            return
        try:
            if self.sample_exists(sample_id):
                return
        except SQLAlchemyError:
            return  # the database cannot say: the file stays (a re-sent sample rewrites it)
        self.images.discard(row.image_path)

    def _reserve_labour(self, s: Session, batch_id: str, labour: float) -> bool:
        result = s.execute(
            update(Batch)
            .where(Batch.id == batch_id,
                   (Batch.labour_budget <= 0) | (Batch.labour_reserved + labour <= Batch.labour_budget + 1e-9))
            .values(labour_reserved=Batch.labour_reserved + labour))
        return result.rowcount == 1

    def _sample_row(self, new: NewSample, now: float) -> Sample:
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
            deadline=new.deadline, received_at=now)

    def device_intake(self, device_id: str, *, open_samples: bool = True, hourly: bool = True) -> DeviceIntake:
        """The device's samples waiting for people and what it stored in the last hour (hgen.hub.kb.intake); a
        count not asked for reads as 0."""
        with self.session() as s:
            return read_intake(s, device_id, self.clock(), open_samples=open_samples, hourly=hourly)

    # --- model bundles ------------------------------------------------------------------------------------

    def add_bundle(self, record: BundleRecord) -> None:
        with self.session() as s:
            s.merge(bundle_row(record))

    def bundle(self, name: str, version: str = "") -> BundleRecord | None:
        """The named version, or the newest when `version` is empty: the highest version number (then the latest
        published), not the latest clock reading, which hosts with skewed clocks would disagree on."""
        with self.session() as s:
            query = select(Bundle).where(Bundle.name == name)
            rows = s.scalars(query.where(Bundle.version == version) if version else query).all()
            row = max(rows, key=lambda r: (version_key(r.version), r.published_at), default=None)
            if row is None:
                return None
            return BundleRecord(row.name, row.version, row.sha256, row.size, row.signature, row.path,
                                row.published_at, row.fetch_uri or "", row.target)

    def bundle_archive(self, name: str, version: str) -> bytes | None:
        """The copy of a bundle's archive kept with its record (None for records from before copies were kept)."""
        with self.session() as s:
            return s.scalar(select(Bundle.archive).where(Bundle.name == name, Bundle.version == version))

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

    def image_dir_missing(self) -> Path | None:
        """The configured image_dir when it is not a folder here while samples' images are files in it: a command
        run from another working folder (for a relative path) or machine, which would read no image or write where
        the serving hub does not look. None when all is well."""
        folder = self.images.image_dir
        if folder is None or folder.is_dir():
            return None
        with self.session() as s:
            stored = s.scalar(select(Sample.id).where(Sample.image_path.is_not(None)).limit(1))
        return folder if stored is not None else None


def bundle_row(record: BundleRecord) -> Bundle:
    """The row to merge; a record read back (no archive, perhaps no target) leaves the stored ones as they are."""
    known = {"target": record.target, "archive": record.archive}
    return Bundle(name=record.name, version=record.version, sha256=record.sha256, size=record.size,
                  signature=record.signature, path=record.path, published_at=record.published_at,
                  fetch_uri=record.fetch_uri, **{key: value for key, value in known.items() if value is not None})


def bundle_notice(row: BundleRecord) -> hub_pb2.ModelUpdate:
    notice = hub_pb2.ModelUpdate(bundle_name=row.name, version=row.version, sha256=row.sha256, size=row.size,
                                 signature=row.signature, fetch_uri=row.fetch_uri)
    notice.published_at.FromNanoseconds(int(row.published_at * 1e9))
    return notice
