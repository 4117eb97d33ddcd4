"""Per-device limits on what one device may store (`limits` in the hub config): one device flooding the hub must
not push every other device's samples past their deadlines, nor fill the disk.

Refusals use reject reasons every agent and phone already takes as final (LABOUR_BUDGET, TOO_LARGE): the model's
answer stands, the sample leaves the device's outbox and is not asked about again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import LabourBudgetExceededError, MessageTooLargeError
from hgen.hub.kb.store import DeviceIntake, KnowledgeBase
from hgen.hub.validation import clip

HOUR_S = 3600.0  # the window of the per-device hourly limits
MINUTE_S = 60.0  # the hourly image budget's resolution


class DeviceSampleCapError(LabourBudgetExceededError):
    """A device is at limits.max_open_samples_per_device or limits.max_samples_per_device_per_hour. Sent as
    LABOUR_BUDGET, a reason every agent and phone already takes as final (the model's answer stands, the sample
    leaves the outbox, nothing is resent): a new reason would break them (RejectReason.Name raises on it)."""

    code = "device_sample_cap"


class DeviceImageBudgetError(MessageTooLargeError):
    """A device's images stored in the last hour would pass limits.max_image_bytes_per_device_per_hour (sent as
    TOO_LARGE, a reason agents know): images at the payload cap filled the disk at about 88 GiB an hour."""

    code = "device_image_budget"


class ImageWindows:
    """Image bytes each device stored in the last hour, by minute, in this hub process.

    In memory: the knowledge base records no size for an image kept as a file, and summing the files' sizes for
    every sample would stat thousands of them. A device's first sample since start reads its last hour's images
    once (`KnowledgeBase.image_bytes_since`), so a restart hands out no fresh budget. Several hub processes each
    count what they store (a device spreading its samples over N hubs may store up to N budgets). Callers hold the
    device's lock (`DeviceLocks`)."""

    def __init__(self, seed: Callable[[str, float], list[tuple[float, int]]]) -> None:
        self._seed = seed
        self._minutes: dict[str, dict[int, int]] = {}

    def total(self, device_id: str, now: float) -> int:
        """Bytes the device stored in the hour up to `now` (older minutes are dropped)."""
        minutes = self._device(device_id, now)
        first = _minute(now - HOUR_S)
        for old in [minute for minute in minutes if minute <= first]:
            del minutes[old]
        return sum(minutes.values())

    def add(self, device_id: str, now: float, size: int) -> None:
        minutes = self._device(device_id, now)
        minutes[_minute(now)] = minutes.get(_minute(now), 0) + size

    def _device(self, device_id: str, now: float) -> dict[int, int]:
        minutes = self._minutes.get(device_id)
        if minutes is None:
            minutes = {}
            for at, size in self._seed(device_id, now - HOUR_S):
                minutes[_minute(at)] = minutes.get(_minute(at), 0) + size
            self._minutes[device_id] = minutes
        return minutes


def _minute(at: float) -> int:
    return int(at // MINUTE_S)


class DeviceLocks:
    """One lock per device: a device's requests are checked against its limits one at a time in this process, so
    two of its requests never both pass under a cap. Devices are registered ones (`_check_request`): bounded."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, device_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(device_id, threading.Lock())


class DeviceQuota:
    """One request's new samples against its device's limits (limits.max_open_samples_per_device,
    max_samples_per_device_per_hour, max_image_bytes_per_device_per_hour; 0: off).

    One device flooding the hub (5,000 samples in 12 s) pushed every other device's samples past their deadlines
    and could fill the disk. The counts are read at the request's first new sample (a request that only asks
    again about stored samples reads nothing), then kept up to date as its samples are stored."""

    def __init__(self, device_id: str, limits: LimitsConfig, kb: KnowledgeBase, images: ImageWindows,
                 now: float) -> None:
        self.device_id = device_id
        self.limits = limits
        self.kb = kb
        self.images = images
        self.now = now
        self._intake: DeviceIntake | None = None
        self._stored = 0  # samples this request stored

    def check(self, image_size: int) -> None:
        """Raise DeviceSampleCapError / DeviceImageBudgetError unless one more sample with `image_size` bytes of
        image to store fits."""
        limits, intake, device = self.limits, self._read(), clip(self.device_id)
        waiting, recent = intake.open_samples + self._stored, intake.samples_since + self._stored
        if limits.max_open_samples_per_device and waiting >= limits.max_open_samples_per_device:
            raise DeviceSampleCapError(f"device {device!r} has {waiting} samples waiting for people, at limits."
                                       f"max_open_samples_per_device ({limits.max_open_samples_per_device}): "
                                       "refused for good, the model's answer stands")
        if limits.max_samples_per_device_per_hour and recent >= limits.max_samples_per_device_per_hour:
            raise DeviceSampleCapError(f"device {device!r} stored {recent} samples in the last hour, at limits."
                                       f"max_samples_per_device_per_hour ({limits.max_samples_per_device_per_hour})")
        budget = limits.max_image_bytes_per_device_per_hour
        if budget and image_size and self.images.total(self.device_id, self.now) + image_size > budget:
            raise DeviceImageBudgetError(f"an image of {image_size} bytes would take device {device!r} over limits."
                                         f"max_image_bytes_per_device_per_hour ({budget} bytes)")

    def stored(self, image_size: int) -> None:
        """A sample of this request was stored, with `image_size` bytes of image."""
        self._stored += 1
        if self.limits.max_image_bytes_per_device_per_hour:
            self.images.add(self.device_id, self.now, image_size)

    def _read(self) -> DeviceIntake:
        if self._intake is None:
            limits = self.limits
            if limits.max_open_samples_per_device or limits.max_samples_per_device_per_hour:
                since = self.now - HOUR_S if limits.max_samples_per_device_per_hour else None
                self._intake = self.kb.device_intake(self.device_id, since)
            else:
                self._intake = DeviceIntake(0, 0)
        return self._intake
