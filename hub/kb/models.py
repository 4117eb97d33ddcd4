"""Knowledge-base schema (SQLAlchemy 2 ORM). Times are UTC epoch seconds (Double): portable and easy to compare.

Every field a hub needs lives here, so any hub process can pick up any sample: the scale-out contract.
Changing a model means adding an Alembic revision in migrations/versions (a test compares the two).
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Double, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy import false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

OPEN_STATES = ("received", "assigned")
CLOSED_STATES = ("answered", "partial", "expired")
# The rows of ix_samples_open_device (migration 0013): devices' samples still waiting for people, gold excluded.
# A query uses that index only when its WHERE holds these terms with the values written inline
# (hgen.hub.kb.tasks.device_work writes them so).
OPEN_DEVICE_SAMPLES = "status IN ('received', 'assigned') AND transport != 'gold'"
# The rows of ix_samples_expired_images (migration 0014): samples closed with no answer that still hold an image,
# what the retention sweep (hgen.hub.kb.retention) removes; written inline in its query, as above. A removed image
# leaves an empty blob and no path, as a sample stored past its deadline has had since it arrived.
EXPIRED_IMAGES = "status = 'expired' AND (image_path IS NOT NULL OR length(image_bytes) > 0)"
# On SQLite the same rows, its status term written `+status`: SQLite's planner (no statistics are gathered) took
# the query's `status = 'expired'` to ix_samples_status_received and read every expired sample ever kept; a unary
# plus keeps a term off indexes, so only this index, whose predicate holds the very same term, fits.
EXPIRED_IMAGES_SQLITE = "+" + EXPIRED_IMAGES


def labelled_images(table: str = "") -> str:
    """The rows of ix_samples_labelled_images (migration 0017): devices' answered samples that still hold an image,
    what the retention of answered images (hgen.hub.kb.retention_labelled, knowledge_base.keep_labelled_images)
    counts per model and empties past the newest it keeps; written inline in its queries (`+status` on SQLite, as
    above), with `table` "samples." where a query joins replies, whose status would be ambiguous."""
    return (f"{table}status IN ('answered', 'partial') AND {table}transport != 'gold' "
            f"AND ({table}image_path IS NOT NULL OR length({table}image_bytes) > 0)")


LABELLED_IMAGES = labelled_images()
LABELLED_IMAGES_SQLITE = "+" + LABELLED_IMAGES


class Base(DeclarativeBase):
    pass


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    registered_at: Mapped[float] = mapped_column(Double)
    labour_spent: Mapped[float] = mapped_column(Double, default=0.0)
    samples_replied: Mapped[int] = mapped_column(Integer, default=0)
    last_seen: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_status: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # migration 0015: the device's latest hand-out turn (0: never handed out), a counter shared by every hub process
    # on the database, so hand-out goes round the devices across processes (hgen.hub.kb.tasks.fair_candidates)
    last_served: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    __table_args__ = (Index("ix_devices_last_served", "last_served"),)  # the next turn: max(last_served) + 1


class DeviceIntakeMinute(Base):
    """What a device stored in one minute (migration 0015): its per-device hourly limits sum the last hour's rows,
    under the device's row lock, in the transaction that stores the sample (hgen.hub.kb.intake), so hub processes
    sharing the database share one budget. Rows older than an hour are removed as new minutes begin."""

    __tablename__ = "device_intake_minutes"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds // 60
    samples: Mapped[int] = mapped_column(Integer)
    image_bytes: Mapped[int] = mapped_column(BigInteger)  # of the images stored (none for a sample kept without)


class DeviceCredential(Base):
    """A device's secret, only hashed: slowly in Mosquitto's PBKDF2-SHA512 format (the broker's password file is
    rendered from these rows) and as the SHA-256 digest the hub checks (hgen.hub.devices); a revoked credential
    keeps its row with neither (migration 0007; the digest, migration 0010)."""

    __tablename__ = "device_credentials"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    secret_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)  # None: revoked
    # None: revoked, or issued before 0010 (stored at its first verified use)
    secret_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)  # bundles it may fetch (None: any)
    issued_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "human" | "simulated"
    created_at: Mapped[float] = mapped_column(Double)


class Batch(Base):
    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    m: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[float] = mapped_column(Double)
    labour_budget: Mapped[float] = mapped_column(Double)  # 0 = unlimited
    labour_reserved: Mapped[float] = mapped_column(Double, default=0.0)
    created_at: Mapped[float] = mapped_column(Double)
    # migration 0012: the operator page's budget sum per device, read from the index alone
    __table_args__ = (Index("ix_batches_device_budget", "device_id", "labour_budget"),)


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    bundle_name: Mapped[str] = mapped_column(String(128))
    bundle_version: Mapped[str] = mapped_column(String(64))
    captured_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    hdnn_kind: Mapped[int] = mapped_column(Integer)
    image_format: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    image_bytes: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    image_path: Mapped[str | None] = mapped_column(String(512), nullable=True)
    model_output: Mapped[bytes] = mapped_column(LargeBinary)  # serialized hgen.v1.ModelOutput
    confidence: Mapped[float] = mapped_column(Double)
    difficulty: Mapped[float] = mapped_column(Double)
    labour_reserved: Mapped[float] = mapped_column(Double)
    m: Mapped[int] = mapped_column(Integer)
    aggregator: Mapped[str] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    assigned_count: Mapped[int] = mapped_column(Integer, default=0)
    answer_count: Mapped[int] = mapped_column(Integer, default=0)
    deadline: Mapped[float] = mapped_column(Double)
    received_at: Mapped[float] = mapped_column(Double)
    closed_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    __table_args__ = (
        Index("ix_samples_status_received", "status", "received_at"),
        Index("ix_samples_status_deadline", "status", "deadline"),
        Index("ix_samples_device_received", "device_id", "received_at"),  # migration 0012: a device's last bundle
        # migration 0013: each device's oldest open samples (fair hand-out) and a device's open count (its cap), read
        # from an index of open samples only, however many closed ones the device has
        Index("ix_samples_open_device", "device_id", "received_at", sqlite_where=text(OPEN_DEVICE_SAMPLES),
              postgresql_where=text(OPEN_DEVICE_SAMPLES)),
        # migration 0014: images of samples that expired unanswered, oldest closed first (the retention sweep reads
        # only these, however many samples the knowledge base keeps)
        Index("ix_samples_expired_images", "closed_at", sqlite_where=text(EXPIRED_IMAGES_SQLITE),
              postgresql_where=text(EXPIRED_IMAGES)),
        # migration 0017: per model, answered device samples that still hold an image by closing time (= their
        # reply's), so the retention of answered images walks a model's newest and empties its oldest by index
        Index("ix_samples_labelled_images", "bundle_name", "closed_at", sqlite_where=text(LABELLED_IMAGES_SQLITE),
              postgresql_where=text(LABELLED_IMAGES)),
        # migration 0019: a model version's newest samples (the operator page's version watch), read by index
        # however many samples other versions and models have. The version first: led by bundle_name, SQLite took
        # it for the retrain trigger's `bundle_name = ?` and read every sample of the model (ix_replies_created_at
        # reads only the new replies)
        Index("ix_samples_bundle_version", "bundle_version", "bundle_name", "received_at"),
    )


class Assignment(Base):
    """A task: one sample assigned to one annotator; its id is the task id of the annotator API."""

    __tablename__ = "assignments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"))
    annotator_id: Mapped[str] = mapped_column(ForeignKey("annotators.id"))
    status: Mapped[str] = mapped_column(String(16))  # open | answered | closed
    assigned_at: Mapped[float] = mapped_column(Double)
    # 0 the first time this annotator is given the sample; a gold sample is given again (1, 2, ...) once they have
    # seen every gold one, so they stay checked (migration 0011). A device's sample is never given twice.
    repeat_no: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    __table_args__ = (UniqueConstraint("sample_id", "annotator_id", "repeat_no",
                                       name="uq_assignment_sample_annotator_repeat"),
                      Index("ix_assignments_status_assigned", "status", "assigned_at"),  # migration 0006
                      Index("ix_assignments_annotator_status", "annotator_id", "status"))


class AnswerRow(Base):
    __tablename__ = "answers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("assignments.id"), unique=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), index=True)
    annotator_id: Mapped[str] = mapped_column(ForeignKey("annotators.id"))
    class_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # serialized hgen.v1.Answer
    latency_s: Mapped[float] = mapped_column(Double)
    operations: Mapped[int] = mapped_column(Integer)
    simulated: Mapped[bool] = mapped_column(Boolean)
    submitted_at: Mapped[float] = mapped_column(Double)
    __table_args__ = (Index("ix_answers_annotator_id", "annotator_id", "id"),  # migration 0012: the operator page
                      Index("ix_answers_submitted_at", "submitted_at"))


class Reply(Base):
    """The aggregated label and the reply sent to the device: at most one per sample (the primary key)."""

    __tablename__ = "replies"
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    reply_id: Mapped[str] = mapped_column(String(36), unique=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    status: Mapped[str] = mapped_column(String(16))
    aggregator: Mapped[str] = mapped_column(String(64))
    class_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # migration 0018: for a drawing (boxes, regions), whether a majority of the people asked stands behind it
    # (hgen.hub.kb.closing.agreed_drawing); None for classes, and for replies made before it (kept as labels)
    agreed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    labour: Mapped[float] = mapped_column(Double)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # serialized hgen.v1.SampleReply
    transport: Mapped[str] = mapped_column(String(16))
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)
    __table_args__ = (Index("ix_replies_transport_delivered", "transport", "delivered"),
                      # migration 0016: the labels made since a model's last retrain (its trigger's count)
                      Index("ix_replies_created_at", "created_at"))


class Bundle(Base):
    __tablename__ = "bundles"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    path: Mapped[str] = mapped_column(String(1024))
    published_at: Mapped[float] = mapped_column(Double)
    fetch_uri: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    target: Mapped[str | None] = mapped_column(String(64), nullable=True)  # migration 0009
    # the archive itself, so a hub that shares the database but not the disk serves it (loaded only when asked)
    archive: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)


# --- Web UI, gold tasks and the retraining loop (migration 0002) ------------------------------------------------


class WebAccount(Base):
    """A person's login: a scrypt password hash, or a pending invite (only its SHA-256 is stored)."""

    __tablename__ = "web_accounts"
    annotator_id: Mapped[str] = mapped_column(ForeignKey("annotators.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # annotator | operator
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    invite_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    invite_expires: Mapped[float | None] = mapped_column(Double, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    # migration 0006: bumped by logout, password reset / re-invite, role change and pause; a session cookie
    # carries the epoch it was issued under and is refused once they differ (server-side revocation)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AnnotatorPause(Base):
    """An annotator who gets no tasks (low gold accuracy, or an operator's decision) and why."""

    __tablename__ = "annotator_pauses"
    annotator_id: Mapped[str] = mapped_column(ForeignKey("annotators.id"), primary_key=True)
    reason: Mapped[str] = mapped_column(String(512))
    paused_at: Mapped[float] = mapped_column(Double)


class GoldItem(Base):
    """A gold task: a hub-owned sample whose true class is known; answers to it rate the annotator."""

    __tablename__ = "gold_items"
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    class_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)


class TaskEvent(Base):
    """A task given back without a label ("skip" / "cant_tell"): the slot goes to someone else."""

    __tablename__ = "task_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("assignments.id"), unique=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), index=True)
    annotator_id: Mapped[str] = mapped_column(ForeignKey("annotators.id"))
    kind: Mapped[str] = mapped_column(String(16))
    latency_s: Mapped[float] = mapped_column(Double)
    at: Mapped[float] = mapped_column(Double)
    __table_args__ = (Index("ix_task_events_annotator_id", "annotator_id"),)  # migration 0012: the operator page


class ModelVersion(Base):
    """A model version the hub can retrain from: its Keras file, its bundle and the calibrated gate."""

    __tablename__ = "model_versions"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    keras_path: Mapped[str] = mapped_column(String(1024))
    bundle_dir: Mapped[str] = mapped_column(String(1024))
    tau: Mapped[float] = mapped_column(Double)
    temperature: Mapped[float] = mapped_column(Double)
    retrain_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)


class RetrainRun(Base):
    """One retrain attempt, whatever its outcome; `cutoff` is the reply time up to which labels were counted."""

    __tablename__ = "retrain_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | published | rejected | failed
    trigger: Mapped[str] = mapped_column(String(16))  # threshold | operator | cli | api
    requested_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    from_version: Mapped[str] = mapped_column(String(64))
    to_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cutoff: Mapped[float] = mapped_column(Double)
    samples_used: Mapped[int] = mapped_column(Integer, default=0)
    filtered_out: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    research: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # migration 0005


# --- State shared by hub processes: login rate limit and retrain leases (migration 0004) -------------------------


class LoginFailure(Base):
    """One failed (or still being checked) login: the rate limit counts these rows, so every hub process on the
    database sees the same count. Rows older than the window are pruned."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(128))  # the name typed, known or not
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Double)
    __table_args__ = (
        Index("ix_login_failures_address_at", "address", "at"),
        Index("ix_login_failures_at", "at"),
        Index("ix_login_failures_account_at", "account", "at"),  # migration 0006
    )


class RetrainLease(Base):
    """Who may retrain a model now: one row per model, held by one worker until released or `expires_at`
    passes without renewal (a crashed hub), after which another worker may take it over."""

    __tablename__ = "retrain_leases"
    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    acquired_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)


class PhoneInvite(Base):
    """A phone's single-use onboarding link (migration 0008): found by the SHA-256 of its token, its provisioning
    (the device's secret among it) sealed with a key derived from the token, so the database alone reveals no
    secret; any hub process on the database can redeem it, once, until `expires_at`."""

    __tablename__ = "phone_invites"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None: redeemed
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)
    redeemed_at: Mapped[float | None] = mapped_column(Double, nullable=True)
