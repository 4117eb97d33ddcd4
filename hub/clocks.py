"""How far each device's clock is from the hub's, told apart from time a request spent queued.

A request says when the device sent it (`sent_at`), so `hub now - sent_at` is the device clock's offset plus the
time the request travelled: a second on a live link, but an hour for a request the broker held while the hub was
down, or that paho re-sent after a reconnect. Taken as skew, that queueing time gave a stale sample a fresh
deadline. Queueing only ever adds, so of the device's recent requests the least offset is the best estimate of its
clock: a request is moved by at most that. A clock that is ahead (a negative offset) cannot be queueing, and is
applied as it is.
"""

from __future__ import annotations

import threading
from collections import deque

RECENT = 16  # requests per device the estimate looks back on: a clock set right by NTP counts within as many


class DeviceClocks:
    """Per device, the offsets of its recent requests; thread-safe (every ingest thread reports here)."""

    def __init__(self, recent: int = RECENT) -> None:
        self._recent = recent
        self._offsets: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def observe(self, device_id: str, offset: float) -> float:
        """Record this request's offset and return the part of it that is the device's clock (what its deadline is
        moved by)."""
        with self._lock:
            seen = self._offsets.setdefault(device_id, deque(maxlen=self._recent))
            seen.append(offset)
            least = min(seen)
        if offset <= 0:
            return offset
        return min(offset, max(0.0, least))

    def skew(self, device_id: str) -> float:
        """The device clock's estimated offset (0 before any request): what a warning about it should say."""
        with self._lock:
            seen = self._offsets.get(device_id)
            return min(seen) if seen else 0.0
