"""Ingest off paho's network thread: messages are committed by a worker, then acknowledged.

The network thread also reads PUBACKs for our replies and answers the broker's keep-alive pings. When it
waited for the knowledge base (SQLite's write lock under a busy crowd), it stopped reading its socket, the
broker dropped the hub, and every reconnect re-published the whole unacknowledged backlog: after a
30-minute outage the loop never converged. Now the network thread only queues a message; one worker commits
it and then sends the PUBACK itself (paho's manual acknowledgement). The broker sends at most
`INGEST_WINDOW` unacknowledged messages (MQTT v5 Receive Maximum), so the queue is bounded without ever
blocking the network thread, and a hub that dies mid-message still gets it again.

A message queued before a reconnect is dropped unprocessed: the broker re-sends it in the new session (same
packet id), and acknowledging it on the new connection would acknowledge whatever now carries that id.
A message whose handling fails with a transient error (the database locked or unreachable) is retried until
it succeeds: the broker's window then fills and ingest pauses, which is the back-pressure we want. A message that
fails for any other reason (a bug, or input the service cannot take) is acknowledged after one try, counted
(`mqtt_ingest_dropped`) and logged: retrying it would only stall every other device behind the one worker, and
the device asks again about every sample it has no reply for.

Receive Maximum bounds only QoS 1 and 2. The queue is bounded too: a QoS 0 message (no device of ours sends one;
the transport drops QoS 0 samples before they get here) beyond `QOS0_KEPT` waiting is dropped and counted
(`mqtt_ingest_overflow`); a QoS 1 message is never dropped (it holds a window slot until acknowledged), and
messages of an earlier connection are discarded as soon as one of a newer connection arrives. The worker takes
the devices' messages round-robin, each device's in arrival order, so one busy device cannot starve the others
of the window it got; acknowledgements still go out in arrival order (MQTT 4.6: a message handled ahead of an
earlier one waits for it before its PUBACK is sent).

What the hub holds is bounded whatever the broker does. Mosquitto before 2.0.13 (eclipse/mosquitto#2306, fixed by
330bf6ef; Debian bookworm and Raspberry Pi OS ship 2.0.11) does not keep to Receive Maximum once acknowledgements
flow: each PUBACK of the oldest message in flight releases up to 64 more queued ones (measured), so one flooding
device had the hub hold 1,465 unacknowledged messages of a 1,500 flood (up to 8 MiB each). A message is held from
`put` until it is acknowledged or let go; while more than `INGEST_WINDOW` QoS 1/2 messages or more than
`max_held_bytes` are held, `wait_for_room` keeps paho's network thread from reading the next packet (TCP
back-pressure: the rest waits at the broker, which keeps it), so the hub holds at most one message beyond either
cap. A compliant broker never sends more than the window, so only the bytes cap can make the hub wait on one. Room
comes from the worker handling messages, not from the network thread, so the wait cannot deadlock; the worker's
PUBACKs and the hub's replies are queued meanwhile and written when the wait ends (the thread then reads one more
packet per message let go). If the knowledge base stalls while the hub waits, nothing is written, so the broker
drops the hub after 1.5 keep-alives; the hub notices once ingest resumes, reconnects, and the broker re-sends what
was not acknowledged. The alternatives lose or repeat work: a message left unacknowledged is re-sent only on a
reconnect (MQTT 5 4.4; neither Mosquitto nor paho retries within a session), and after a disconnect (0x93, Receive
Maximum exceeded) Mosquitto 2.0.11 re-sends its whole in-flight list at once (316 of 316 measured), as far over the
cap as before.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
INGEST_WINDOW = 64  # messages the broker may send before our acknowledgements (MQTT v5 Receive Maximum)
QOS0_KEPT = 64  # QoS 0 messages waiting at once; more are dropped (nothing bounds them at the broker)
HELD_BYTES = 256 * 1024 * 1024  # payload bytes held unacknowledged before paho reads no more (mqtt.max_held_bytes)
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # back-off between tries of a transient error; the last one repeats
POLL_S = 0.5


@dataclass(frozen=True)
class Received:
    generation: int  # the connection it arrived on
    mid: int
    qos: int
    topic: str
    payload: bytes

    @property
    def device(self) -> str:
        """The device segment of `<prefix>/<device>/<kind>` (the round-robin key)."""
        parts = self.topic.rsplit("/", 2)
        return parts[-2] if len(parts) >= 2 else ""


class DeviceQueues:
    """Waiting messages per device, served round-robin; not thread-safe (the worker's condition guards it)."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Received]] = OrderedDict()  # devices with messages, in serving order
        self.size = self.qos0 = 0

    def append(self, message: Received) -> None:
        self._queues.setdefault(message.device, deque()).append(message)
        self.size += 1
        self.qos0 += message.qos == 0

    def pop(self) -> Received:
        """The oldest message of the next device in turn; that device goes to the back of the line."""
        device, waiting = next(iter(self._queues.items()))
        message = waiting.popleft()
        del self._queues[device]
        if waiting:
            self._queues[device] = waiting
        self.size -= 1
        self.qos0 -= message.qos == 0
        return message

    def drop_before(self, generation: int) -> list[Received]:
        """Discard the messages of connections older than `generation`; those discarded."""
        dropped: list[Received] = []
        for device in list(self._queues):
            kept = deque(m for m in self._queues[device] if m.generation >= generation)
            dropped += [m for m in self._queues[device] if m.generation < generation]
            if kept:
                self._queues[device] = kept
            else:
                del self._queues[device]
        self.size -= len(dropped)
        self.qos0 -= sum(m.qos == 0 for m in dropped)
        return dropped


class IngestWorker:
    """One thread: handle (commit), then acknowledge, each device's messages in arrival order."""

    def __init__(self, handle: Callable[[Received], None], ack: Callable[[Received], None],
                 generation: Callable[[], int], count: Callable[[str], None],
                 transient: tuple[type[BaseException], ...] = (), retry_s: tuple[float, ...] = RETRY_S,
                 max_held_bytes: int = HELD_BYTES) -> None:
        self._handle, self._ack, self._generation, self._count = handle, ack, generation, count
        self._transient, self._retry_s = transient, retry_s
        self._max_held_bytes = max_held_bytes
        self._waiting = DeviceQueues()
        self._arrival: deque[Received] = deque()  # QoS 1/2 messages not acknowledged yet, in arrival order
        self._finished: dict[int, bool] = {}  # id() of a handled message -> whether it is to be acknowledged
        self._held: dict[int, Received] = {}  # id() -> message received, not yet acknowledged or let go
        self._held_bytes = self._held_windowed = 0  # their payload bytes; how many of them are QoS 1/2
        self._pause_logged = False
        self._newest = 0  # the newest connection a message came on
        lock = threading.Lock()
        self._ready = threading.Condition(lock)  # a message is waiting (or stopping)
        self._room = threading.Condition(lock)  # a held message was let go (or stopping)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-ingest", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
            self._room.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def put(self, message: Received) -> None:
        """Called on paho's network thread: never blocks (`wait_for_room` does, after it). A QoS 0 message over
        `QOS0_KEPT` is dropped."""
        with self._ready:
            if message.generation > self._newest:
                self._newest = message.generation
                stale = self._waiting.drop_before(message.generation)  # the broker re-sends them
                for old in stale:
                    self._let_go(old)
                    self._count("mqtt_ingest_stale")
                self._forget_before(message.generation)
            if message.qos == 0 and self._waiting.qos0 >= QOS0_KEPT:
                self._count("mqtt_ingest_overflow")
                return
            self._waiting.append(message)
            self._held[id(message)] = message
            self._held_bytes += len(message.payload)
            if message.qos > 0:
                self._arrival.append(message)
                self._held_windowed += 1
            self._ready.notify()

    def wait_for_room(self) -> None:
        """Called on paho's network thread after `put`: while more than `INGEST_WINDOW` QoS 1/2 messages or more
        than `max_held_bytes` are held, wait for the worker to let some go, so paho reads no further packet from
        the broker meanwhile (the module docstring says why this is safe). Not while stopping, nor without a
        worker to make room."""
        with self._room:
            if not self._full():
                return
            self._count("mqtt_ingest_paused")
            if not self._pause_logged:
                self._pause_logged = True
                log.warning("MQTT ingest holds %d unacknowledged messages (%d bytes), beyond Receive Maximum %d or "
                            "mqtt.max_held_bytes %d: the hub reads no more from the broker until it has handled "
                            "some (Mosquitto before 2.0.13 sends more than Receive Maximum; logged once, counted "
                            "as mqtt_ingest_paused)", self._held_windowed, self._held_bytes, INGEST_WINDOW,
                            self._max_held_bytes)
            while self._full() and not self._stopping.is_set() and self._thread.is_alive():
                self._room.wait(POLL_S)

    def held(self) -> tuple[int, int]:
        """QoS 1/2 messages and payload bytes (of any QoS) received and not yet acknowledged or let go."""
        with self._ready:
            return self._held_windowed, self._held_bytes

    def _full(self) -> bool:
        """Under the lock."""
        return self._held_windowed > INGEST_WINDOW or self._held_bytes > self._max_held_bytes

    def _let_go(self, message: Received) -> None:
        """Under the lock: `message` is no longer held (acknowledged, refused or left to the broker); once only."""
        if self._held.pop(id(message), None) is None:
            return
        self._held_bytes -= len(message.payload)
        self._held_windowed -= message.qos > 0
        self._room.notify_all()

    def backlog(self) -> int:
        with self._ready:
            return self._waiting.size

    def _next(self) -> Received | None:
        """The next message in turn, or None after `POLL_S` without one (to look at `_stopping` again)."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._waiting.size > 0 or self._stopping.is_set(), POLL_S):
                return None
            return self._waiting.pop() if self._waiting.size and not self._stopping.is_set() else None

    def _run(self) -> None:
        while not self._stopping.is_set():
            message = self._next()
            if message is not None:
                self._finish(message, self._process(message))

    def _process(self, message: Received) -> bool:
        """Handle it; whether it is to be acknowledged."""
        if message.generation != self._generation():
            self._count("mqtt_ingest_stale")  # the broker re-sends it on the new connection
            return False
        if not self._attempt(message):
            return False
        if message.generation != self._generation():  # reconnected while it was handled: its packet id now
            self._count("mqtt_ingest_stale")  # names another message; the broker re-sends this one
            return False
        return True

    def _finish(self, message: Received, acknowledge: bool) -> None:
        """Acknowledge, in arrival order, every message whose turn has come: this one, and those handled ahead of
        an earlier one that waited for it. Each is let go once its PUBACK is queued, so the network thread reads
        more only after it."""
        if message.qos == 0:
            with self._ready:
                self._let_go(message)
            return
        due: list[Received] = []
        done: list[Received] = []
        with self._ready:
            if message.generation < self._newest:  # of a lost connection: already forgotten, never acknowledged
                return
            self._finished[id(message)] = acknowledge
            while self._arrival and id(self._arrival[0]) in self._finished:
                head = self._arrival.popleft()
                done.append(head)
                if self._finished.pop(id(head)):
                    due.append(head)
        try:
            for head in due:
                self._ack(head)
        finally:
            with self._ready:
                for head in done:
                    self._let_go(head)

    def _forget_before(self, generation: int) -> None:
        """Messages of a lost connection are never acknowledged: they no longer hold back the newer ones."""
        while self._arrival and self._arrival[0].generation < generation:
            old = self._arrival.popleft()
            self._finished.pop(id(old), None)
            self._let_go(old)

    def _attempt(self, message: Received) -> bool:
        """True once handled (or given up on): then it may be acknowledged. False: leave it to the broker."""
        tries = 0
        while True:
            try:
                self._handle(message)
                return True
            except self._transient:
                log.warning("MQTT message on %s waits: the knowledge base is unavailable", message.topic,
                            exc_info=tries == 0)
                self._count("mqtt_ingest_retried")
            except Exception:
                log.exception("MQTT message on %s dropped: its handling failed (not a database outage, so trying "
                              "again would fail the same way)", message.topic)
                self._count("mqtt_ingest_dropped")
                return True
            if self._stopping.wait(self._retry_s[min(tries, len(self._retry_s) - 1)]):
                return False  # stopping: the broker re-sends it to the next hub process
            if message.generation != self._generation():
                return False  # reconnected meanwhile: the broker re-sends it on the new connection
            tries += 1
