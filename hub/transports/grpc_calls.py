"""What each device's gRPC calls hold on the hub: every call parks a server thread, so a device's calls are counted
(`DeviceCalls`, per kind and in all) and a call whose request message does not come is cancelled (`ReadTimeouts`).
One device must not be able to hold the pool that serves every device.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import grpc


@dataclass(eq=False)
class Watch:
    """One open WatchUpdates stream: `wake` cuts its wait short (a bundle changed, it was replaced or cancelled)."""

    wake: threading.Event = field(default_factory=threading.Event)
    replaced: bool = False


class DeviceCalls:
    """The calls each device has open, against per-device caps. A call parks a server thread from the moment its
    credential is proved (it then waits for its request message) until it ends, a stream for as long as it is open,
    so without caps one device (a bug, a reconnect loop, a stolen credential) could hold the whole pool and every
    other device's calls would wait. Every call counts against `total` (grpc.max_calls_per_device); Submit and
    FetchBundle streams also against their own caps within it. A device's WatchUpdates stream is one: a new one
    replaces the older (a reconnecting device's old stream may not have noticed it is dead yet, so the newest must
    win); both hold a call slot until they end."""

    SUBMIT, FETCH, WATCH, STATUS = "Submit", "FetchBundle", "WatchUpdates", "ReportStatus"
    SHORT: ClassVar[dict[str, str]] = {SUBMIT: "submit", FETCH: "fetch"}  # in the setting's and metric's names

    def __init__(self, total: int, caps: dict[str, int]) -> None:
        self.total = total
        self.caps = caps
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()  # device -> its open calls, of every kind
        self._open: Counter[tuple[str, str]] = Counter()  # (kind, device) -> open calls of the capped kinds
        self._watches: dict[str, Watch] = {}

    def acquire(self, kind: str, device: str) -> str | None:
        """Count one more `kind` call of `device`; else (nothing counted) the setting whose cap it already has."""
        with self._lock:
            if kind in self.caps and self._open[kind, device] >= self.caps[kind]:
                return f"max_{self.SHORT[kind]}_streams_per_device"
            if self._calls[device] >= self.total:
                return "max_calls_per_device"
            self._calls[device] += 1
            if kind in self.caps:
                self._open[kind, device] += 1
            return None

    def release(self, kind: str, device: str) -> None:
        with self._lock:
            for counter, key in ((self._calls, device), (self._open, (kind, device))):
                if key in counter:
                    counter[key] -= 1  # type: ignore[index]
                    if counter[key] <= 0:  # type: ignore[index]
                        del counter[key]  # type: ignore[arg-type]

    def held(self, device: str) -> int:
        """The calls `device` has open."""
        with self._lock:
            return self._calls[device]

    def watch(self, device: str, slots: int) -> Watch | None:
        """The device's new WatchUpdates stream; its older one, if any, is told to end. None when `slots` devices
        already watch and this one is not among them (a replacement takes its own older stream's slot)."""
        new = Watch()
        with self._lock:
            if device not in self._watches and len(self._watches) >= slots:
                return None
            older, self._watches[device] = self._watches.get(device), new
        if older is not None:
            older.replaced = True
            older.wake.set()
        return new

    def open_count(self) -> int:
        """Calls open across the fleet (each holds a server thread; a watch stream holds a call slot too)."""
        with self._lock:
            return sum(self._calls.values())

    def unwatch(self, device: str, watch: Watch) -> None:
        with self._lock:
            if self._watches.get(device) is watch:
                del self._watches[device]

    def wake_watches(self) -> None:
        with self._lock:
            watches = list(self._watches.values())
        for watch in watches:
            watch.wake.set()


@dataclass(eq=False)
class PendingRead:
    """A `kind` call of `device` waiting for its request message, until `deadline` (monotonic)."""

    deadline: float
    context: grpc.ServicerContext
    kind: str
    device: str
    done: bool = False  # the message came (or the call ended) first
    expired: bool = False  # the deadline came first: the call is cancelled


class ReadTimeouts:
    """Cancels calls whose request message does not arrive in time. gRPC's sync server reads a request with no time
    limit of its own: a proved device that never sends its message (or trickles it) would keep the thread until the
    call's deadline, which the client chooses. One thread, started at the first call, watches every waiting call;
    cancelling a call wakes its handler (the request iterator raises), which then ends. `on_expired` runs on that
    thread just before a call is cancelled (to count and log it)."""

    def __init__(self, timeout_s: float, on_expired: Callable[[PendingRead], None]) -> None:
        self.timeout_s = timeout_s
        self.on_expired = on_expired
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, PendingRead]] = []  # also reads already done, until they reach the top
        self._waiting = 0  # reads in the heap not done yet
        self._order = itertools.count()  # ties: never compare two PendingRead
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, context: grpc.ServicerContext, kind: str, device: str) -> PendingRead:
        read = PendingRead(time.monotonic() + self.timeout_s, context, kind, device)
        with self._cond:
            if len(self._heap) > 2 * self._waiting + 1024:  # mostly reads done long ago (a burst of calls)
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (read.deadline, next(self._order), read))
            self._waiting += 1
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="grpc-read-timeouts", daemon=True)
                self._thread.start()
            if self._heap[0][2] is read:  # the earliest now (every read has the same timeout): wake the thread
                self._cond.notify()
        return read

    def disarm(self, read: PendingRead) -> bool:
        """The message came (or the call ended): True unless the timeout came first (the call is being cancelled)."""
        with self._cond:
            if not read.done and not read.expired:
                self._waiting -= 1
            read.done = True
            return not read.expired

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][2].done:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._stopped:
                    return
                expired = []
                while self._heap and self._heap[0][0] <= now:
                    read = heapq.heappop(self._heap)[2]
                    if not read.done:
                        read.expired = True
                        self._waiting -= 1
                        expired.append(read)
            for read in expired:  # outside the lock: cancel wakes the handler, which disarms
                try:
                    self.on_expired(read)
                finally:
                    read.context.cancel()
