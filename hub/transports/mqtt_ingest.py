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
it succeeds: the broker's window then fills and ingest pauses, which is the back-pressure we want. A message
that keeps failing for any other reason (a bug) is acknowledged after `ATTEMPTS` tries and counted: holding it
would take one of the broker's window slots until the next reconnect, and the device asks again about every
sample it has no reply for.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
INGEST_WINDOW = 64  # messages the broker may send before our acknowledgements (MQTT v5 Receive Maximum)
ATTEMPTS = 5
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # back-off between tries; the last one repeats for transient errors
POLL_S = 0.5


@dataclass(frozen=True)
class Received:
    generation: int  # the connection it arrived on
    mid: int
    qos: int
    topic: str
    payload: bytes


class IngestWorker:
    """One thread: handle (commit), then acknowledge, each message in arrival order."""

    def __init__(self, handle: Callable[[Received], None], ack: Callable[[Received], None],
                 generation: Callable[[], int], count: Callable[[str], None],
                 transient: tuple[type[BaseException], ...] = (), retry_s: tuple[float, ...] = RETRY_S) -> None:
        self._handle, self._ack, self._generation, self._count = handle, ack, generation, count
        self._transient, self._retry_s = transient, retry_s
        self._queue: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-ingest", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def put(self, message: Received) -> None:
        """Called on paho's network thread: never blocks."""
        self._queue.put(message)

    def backlog(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if message.generation != self._generation():
                self._count("mqtt_ingest_stale")  # the broker re-sends it on the new connection
                continue
            if self._attempt(message):
                self._ack(message)

    def _attempt(self, message: Received) -> bool:
        """True once handled (or given up on): then it may be acknowledged. False: leave it to the broker."""
        tries = failures = 0
        while True:
            try:
                self._handle(message)
                return True
            except self._transient:
                log.warning("MQTT message on %s waits: the knowledge base is unavailable", message.topic,
                            exc_info=tries == 0)
                self._count("mqtt_ingest_retried")
            except Exception:
                failures += 1
                log.exception("MQTT message on %s failed (%d of %d)", message.topic, failures, ATTEMPTS)
                if failures >= ATTEMPTS:
                    self._count("mqtt_ingest_dropped")
                    return True
            if self._stopping.wait(self._retry_s[min(tries, len(self._retry_s) - 1)]):
                return False  # stopping: the broker re-sends it to the next hub process
            if message.generation != self._generation():
                return False  # reconnected meanwhile: the broker re-sends it on the new connection
            tries += 1
