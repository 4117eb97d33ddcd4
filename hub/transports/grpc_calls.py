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
class Slot:
    """One call's slot among its device's: given back once (`DeviceCalls.release`), or handed over to a newer
    WatchUpdates call of the device (`given_up`), which then holds it in its place."""

    kind: str
    device: str
    given_up: bool = False


@dataclass(eq=False)
class Watch:
    """One open WatchUpdates stream: `wake` cuts its wait short (a bundle changed, it was replaced or cancelled)."""

    slot: Slot | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    replaced: bool = False


class CallCapped(Exception):
    """A device already holds its cap of calls: `setting` names the cap."""

    def __init__(self, setting: str) -> None:
        super().__init__(setting)
        self.setting = setting


class DeviceCalls:
    """The calls each device has open, against per-device caps. A call parks a server thread from the moment its
    credential is proved (it then waits for its request message) until it ends, a stream for as long as it is open,
    so without caps one device (a bug, a reconnect loop, a stolen credential) could hold the whole pool and every
    other device's calls would wait. Every call counts against `total` (grpc.max_calls_per_device); Submit and
    FetchBundle streams also against their own caps within it. A device's WatchUpdates stream is one: a new one
    replaces the older (a reconnecting device's old stream may not have noticed it is dead yet, so the newest must
    win); both hold a call slot until they end, except when the device is at `total`: then the new WatchUpdates call
    takes over the older stream's slot (which is told to end) instead of being refused."""

    SUBMIT, FETCH, WATCH, STATUS = "Submit", "FetchBundle", "WatchUpdates", "ReportStatus"
    SHORT: ClassVar[dict[str, str]] = {SUBMIT: "submit", FETCH: "fetch"}  # in the setting's and metric's names

    def __init__(self, total: int, caps: dict[str, int]) -> None:
        self.total = total
        self.caps = caps
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()  # device -> its open calls, of every kind
        self._open: Counter[tuple[str, str]] = Counter()  # (kind, device) -> open calls of the capped kinds
        self._watches: dict[str, Watch] = {}

    def acquire(self, kind: str, device: str) -> Slot:
        """Count one more `kind` call of `device`; else (nothing counted) raise CallCapped naming the setting whose
        cap it already has. A WatchUpdates call of a device at `total` whose watch stream is open takes that
        stream's slot over, the stream being told to end (it would end once this call's watch began anyway): a
        reconnecting device's new watch is not refused while its old, dead one is still counted."""
        with self._lock:
            if kind in self.caps and self._open[kind, device] >= self.caps[kind]:
                raise CallCapped(f"max_{self.SHORT[kind]}_streams_per_device")
            slot = Slot(kind, device)
            if self._calls[device] >= self.total:
                older = self._watches.get(device) if kind == self.WATCH else None
                if older is None or older.replaced or older.slot is None or older.slot.given_up:
                    raise CallCapped("max_calls_per_device")
                older.slot.given_up = True  # its count is now this call's
                older.replaced = True
                older.wake.set()  # it ends at once (ABORTED, replaced), freeing its thread
                return slot
            self._calls[device] += 1
            if kind in self.caps:
                self._open[kind, device] += 1
            return slot

    def release(self, slot: Slot) -> None:
        """The call of `slot` ended: its slot is free again (once; nothing when it was handed over)."""
        with self._lock:
            if slot.given_up:
                return
            slot.given_up = True
            for counter, key in ((self._calls, slot.device), (self._open, (slot.kind, slot.device))):
                if key in counter:
                    counter[key] -= 1  # type: ignore[index]
                    if counter[key] <= 0:  # type: ignore[index]
                        del counter[key]  # type: ignore[arg-type]

    def held(self, device: str) -> int:
        """The calls `device` has open."""
        with self._lock:
            return self._calls[device]

    def watching(self, device: str) -> Watch | None:
        """The device's current WatchUpdates stream, if any."""
        with self._lock:
            return self._watches.get(device)

    def watch(self, device: str, slots: int, slot: Slot | None = None) -> Watch | None:
        """The device's new WatchUpdates stream (holding `slot`); its older one, if any, is told to end. None when
        `slots` devices already watch and this one is not among them (a replacement takes its own older stream's
        slot)."""
        new = Watch(slot)
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
    thread just before a call is cancelled (to count and log it).

    gRPC runs the handler when the call arrives, not when its message has, so the time counts the client's upload:
    `timeout_s` suits the small messages, `per_kind` gives a kind its own (Submit: a batch of images, megabytes over
    a slow uplink, was cancelled mid-upload at 10 s and its samples never arrived)."""

    def __init__(self, timeout_s: float, on_expired: Callable[[PendingRead], None],
                 per_kind: dict[str, float] | None = None) -> None:
        self.timeout_s = timeout_s
        self.per_kind = dict(per_kind or {})
        self.on_expired = on_expired
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, PendingRead]] = []  # also reads already done, until they reach the top
        self._waiting = 0  # reads in the heap not done yet
        self._order = itertools.count()  # ties: never compare two PendingRead
        self._thread: threading.Thread | None = None
        self._stopped = False

    def timeout_of(self, kind: str) -> float:
        return self.per_kind.get(kind, self.timeout_s)

    def waiting(self) -> int:
        """Calls whose message has not arrived (nor timed out) yet."""
        with self._cond:
            return self._waiting

    def arm(self, context: grpc.ServicerContext, kind: str, device: str) -> PendingRead:
        read = PendingRead(time.monotonic() + self.timeout_of(kind), context, kind, device)
        with self._cond:
            if len(self._heap) > 2 * self._waiting + 1024:  # mostly reads done long ago (a burst of calls)
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (read.deadline, next(self._order), read))
            self._waiting += 1
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="grpc-read-timeouts", daemon=True)
                self._thread.start()
            if self._heap[0][2] is read:  # the earliest now: wake the thread to wait for it instead
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
