"""The agent's clock, injectable: patience, resend back-off, the labour bucket's window, batch deadlines and
hub deadlines all read it, so a test or a soak can run hours of field time (a long hub outage) in minutes.

Only the agent's own timing goes through it; waits on threads and sockets (the housekeeping tick, reconnect
back-off in the transports, a caller's timeout) stay in real time, and frames keep their real capture time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, due times)."""

    def time(self) -> float:
        """Seconds since the epoch (deadlines and creation times the hub sees)."""


@dataclass(frozen=True)
class SystemClock:
    """The real clock: what every deployed agent uses."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()


@dataclass
class StreamClock:
    """Real time plus an offset that only grows: `advance_to(t)` makes at least `t` seconds have passed since the
    clock was made. A stream played faster than real time (frame i at i / fps) drives it, so field time passes at
    the stream's rate while frames flow and at the real rate after; it never goes back."""

    started: float = field(default_factory=time.monotonic)
    offset: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def monotonic(self) -> float:
        with self._lock:
            return time.monotonic() + self.offset

    def time(self) -> float:
        with self._lock:
            return time.time() + self.offset

    def elapsed(self) -> float:
        return self.monotonic() - self.started

    def advance_to(self, elapsed_s: float) -> None:
        with self._lock:
            behind = elapsed_s - (time.monotonic() + self.offset - self.started)
            if behind > 0:
                self.offset += behind
