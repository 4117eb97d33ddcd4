"""Per-device limits on what one device may store (`limits` in the hub config): one device flooding the hub must
not push every other device's samples past their deadlines, nor fill the disk.

Refusals use reject reasons every agent and phone already takes as final (LABOUR_BUDGET, TOO_LARGE): the model's
answer stands, the sample leaves the device's outbox and is not asked about again.

The limits hold across hub processes sharing a database: what a device stored is counted in the database, and each
new sample is checked again in the transaction that stores it, under its device's row lock (hgen.hub.kb.intake).
Image bytes used to be counted in each process's memory: a device spreading its samples over N hubs stored up to
N hourly image budgets, and two hubs taking its requests at once could both pass the last sample of a cap.
"""

from __future__ import annotations

import threading

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import LabourBudgetExceededError, MessageTooLargeError
from hgen.hub.kb.intake import Admission, DeviceIntake
from hgen.hub.kb.store import KnowledgeBase, NewSample
from hgen.hub.validation import clip


class DeviceSampleCapError(LabourBudgetExceededError):
    """A device is at limits.max_open_samples_per_device or limits.max_samples_per_device_per_hour. Sent as
    LABOUR_BUDGET, a reason every agent and phone already takes as final (the model's answer stands, the sample
    leaves the outbox, nothing is resent): a new reason would break them (RejectReason.Name raises on it)."""

    code = "device_sample_cap"


class DeviceImageBudgetError(MessageTooLargeError):
    """A device's images stored in the last hour would pass limits.max_image_bytes_per_device_per_hour (sent as
    TOO_LARGE, a reason agents know): images at the payload cap filled the disk at about 88 GiB an hour."""

    code = "device_image_budget"


def check_limits(device_id: str, limits: LimitsConfig, intake: DeviceIntake, image_size: int) -> None:
    """Raise DeviceSampleCapError / DeviceImageBudgetError unless one more sample with `image_size` bytes of image to
    store fits what the device stored (`intake`) under `limits` (0: off)."""
    device = clip(device_id)
    if limits.max_open_samples_per_device and intake.open_samples >= limits.max_open_samples_per_device:
        raise DeviceSampleCapError(f"device {device!r} has {intake.open_samples} samples waiting for people, at "
                                   f"limits.max_open_samples_per_device ({limits.max_open_samples_per_device}): "
                                   "refused for good, the model's answer stands")
    hourly = limits.max_samples_per_device_per_hour
    if hourly and intake.samples_in_hour >= hourly:
        raise DeviceSampleCapError(f"device {device!r} stored {intake.samples_in_hour} samples in the last hour, at "
                                   f"limits.max_samples_per_device_per_hour ({hourly})")
    budget = limits.max_image_bytes_per_device_per_hour
    if budget and image_size and intake.image_bytes_in_hour + image_size > budget:
        raise DeviceImageBudgetError(f"an image of {image_size} bytes would take device {device!r} over limits."
                                     f"max_image_bytes_per_device_per_hour ({budget} bytes)")


class DeviceLocks:
    """One lock per device: a device's requests are handled one at a time in this process, so its threads do not
    queue on the device's row lock in the database (which holds the limits across processes). Devices are
    registered ones (`_check_request`): bounded."""

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
    and could fill the disk. `check` refuses early, before an image is looked at, on the counts read at the
    request's first new sample (a request that only asks again about stored samples reads nothing) plus what the
    request stored since; `add` stores the sample, checked again under the device's lock in the database, which
    is what holds across hub processes."""

    def __init__(self, device_id: str, limits: LimitsConfig, kb: KnowledgeBase) -> None:
        self.device_id = device_id
        self.limits = limits
        self.kb = kb
        self._intake: DeviceIntake | None = None
        self._stored = 0  # samples this request stored
        self._stored_bytes = 0  # their image bytes

    def check(self, image_size: int) -> None:
        """Raise DeviceSampleCapError / DeviceImageBudgetError unless one more sample with `image_size` bytes of
        image to store fits, as far as this request knows."""
        check_limits(self.device_id, self.limits, self._read().plus(self._stored, self._stored_bytes), image_size)

    def add(self, new: NewSample) -> str:
        """Store the sample (`KnowledgeBase.add_sample`, its outcome) if it still fits the device's limits with what
        every hub process stored; else DeviceSampleCapError / DeviceImageBudgetError and nothing is stored."""
        image_size = len(new.sample.image.data)
        outcome = self.kb.add_sample(new, self._admission(image_size))
        if outcome == "accepted":
            self._stored += 1
            self._stored_bytes += image_size
        return outcome

    def _admission(self, image_size: int) -> Admission | None:
        limits = self.limits
        open_samples = bool(limits.max_open_samples_per_device)
        hourly = bool(limits.max_samples_per_device_per_hour
                      or (limits.max_image_bytes_per_device_per_hour and image_size))
        if not open_samples and not hourly:
            return None
        return Admission(lambda intake: check_limits(self.device_id, limits, intake, image_size), open_samples, hourly)

    def _read(self) -> DeviceIntake:
        if self._intake is None:
            limits = self.limits
            hourly = bool(limits.max_samples_per_device_per_hour or limits.max_image_bytes_per_device_per_hour)
            if limits.max_open_samples_per_device or hourly:
                self._intake = self.kb.device_intake(self.device_id,
                                                     open_samples=bool(limits.max_open_samples_per_device),
                                                     hourly=hourly)
            else:
                self._intake = DeviceIntake()
        return self._intake
