"""What each device stores, as its per-device limits count it (part of the knowledge base; the limits themselves
are hgen.hub.quotas'): its samples waiting for people, and its samples and image bytes of the last hour, counted
per minute in device_intake_minutes (migration 0015).

A new sample is held to its device's limits in the transaction that stores it, under the device's row lock
(`admit`): two hub processes storing the same device's samples take turns there, so the second sees what the first
stored and they cannot both pass the last byte of a budget. Each process counted in memory before, and a device
spreading its samples over N hubs stored up to N budgets. SQLite serialises every write (BEGIN IMMEDIATE) anyway.
The lock is taken only when a limit is on; the counters are kept whatever the limits, so turning one on, or a
restart, hands out no fresh hour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Insert, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hgen.hub.kb.models import Device, DeviceIntakeMinute, Sample
from hgen.hub.kb.tasks import device_work

HOUR_S = 3600.0  # the window of the per-device hourly limits
MINUTE_S = 60.0  # their resolution: the window is the last 60 minutes counted
# Minutes this far past the current one still count (hub processes sharing the database with clocks a little
# apart); later ones were stored while a clock ran ahead, and are dropped once it is put right: they used to count
# until the clock caught up with them, refusing (for good) a device at its limit for the whole step, hours or days.
AHEAD_MINUTES = 5


@dataclass(frozen=True)
class DeviceIntake:
    """What a device has stored lately, as its per-device limits count it (hgen.hub.quotas.DeviceQuota)."""

    open_samples: int = 0  # waiting for people now
    samples_in_hour: int = 0  # stored in the last hour
    image_bytes_in_hour: int = 0  # of images stored in the last hour

    def plus(self, samples: int, image_bytes: int) -> DeviceIntake:
        """With `samples` more stored (all still waiting) holding `image_bytes` of image."""
        return DeviceIntake(self.open_samples + samples, self.samples_in_hour + samples,
                            self.image_bytes_in_hour + image_bytes)


@dataclass(frozen=True)
class Admission:
    """How `KnowledgeBase.add_sample` holds a new sample to its device's limits: `check` raises to refuse it (the
    transaction stores nothing), given the counts read under the device's lock; `open_samples` / `hourly` say
    which counts the limits need (the others read as 0)."""

    check: Callable[[DeviceIntake], None]
    open_samples: bool
    hourly: bool


def minute_of(at: float) -> int:
    return int(at // MINUTE_S)


def first_minute(now: float) -> int:
    """The oldest minute in the hour up to `now`: the 60 minutes counted end with the current one."""
    return minute_of(now - HOUR_S) + 1


def last_minute(now: float) -> int:
    """The latest minute counted at `now`: the current one, give or take another hub process's clock."""
    return minute_of(now) + AHEAD_MINUTES


def read_intake(s: Session, device_id: str, now: float, *, open_samples: bool = True,
                hourly: bool = True) -> DeviceIntake:
    """The device's counts at `now`, in one statement (each is a round trip per stored sample): its open samples
    (counted in ix_samples_open_device: bounded by its cap, however many closed samples it has) and the hour's rows
    of device_intake_minutes (at most 60, by primary key)."""
    waiting = (select(func.count()).select_from(Sample).where(Sample.device_id == device_id, *device_work())
               .scalar_subquery())
    if not hourly:
        return DeviceIntake(int(s.scalar(select(waiting)) or 0)) if open_samples else DeviceIntake()
    row = s.execute(select(func.coalesce(func.sum(DeviceIntakeMinute.samples), 0),
                           func.coalesce(func.sum(DeviceIntakeMinute.image_bytes), 0),
                           waiting if open_samples else literal(0))
                    .where(DeviceIntakeMinute.device_id == device_id,
                           DeviceIntakeMinute.minute.between(first_minute(now), last_minute(now)))).one()
    return DeviceIntake(int(row[2] or 0), int(row[0]), int(row[1]))


def admit(s: Session, device_id: str, now: float, admission: Admission | None) -> None:
    """Lock the device's row and run `admission.check` on its counts, read by a later statement (under READ
    COMMITTED each statement sees what was committed when it started: one that waited for the lock would not);
    nothing without `admission` (every limit off). On PostgreSQL the lock is FOR NO KEY UPDATE (inserts that only
    reference the device go on); SQLite took its write lock at BEGIN IMMEDIATE and needs none."""
    if admission is None:
        return
    if s.get_bind().dialect.name != "sqlite":
        s.execute(select(Device.id).where(Device.id == device_id).with_for_update(key_share=True))
    admission.check(read_intake(s, device_id, now, open_samples=admission.open_samples, hourly=admission.hourly))


def count_stored(s: Session, device_id: str, now: float, image_bytes: int) -> None:
    """Add one sample with `image_bytes` of image to the device's current minute (one atomic upsert); the first
    sample of a minute also removes the device's rows older than the hour, and those from a clock that ran ahead."""
    minute = minute_of(now)
    upsert = _insert(s).values(device_id=device_id, minute=minute, samples=1, image_bytes=image_bytes)
    upsert = upsert.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=[DeviceIntakeMinute.device_id, DeviceIntakeMinute.minute],
        set_={"samples": DeviceIntakeMinute.samples + 1,
              "image_bytes": DeviceIntakeMinute.image_bytes + image_bytes})
    if s.scalar(upsert.returning(DeviceIntakeMinute.samples)) == 1:
        s.execute(delete(DeviceIntakeMinute).where(DeviceIntakeMinute.device_id == device_id,
                                                   ~DeviceIntakeMinute.minute.between(first_minute(now),
                                                                                      last_minute(now))))


def _insert(s: Session) -> Insert:
    """INSERT with ON CONFLICT, in the dialect of the session's database (SQLite or PostgreSQL)."""
    dialect = s.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(DeviceIntakeMinute)

