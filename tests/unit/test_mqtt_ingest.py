"""The hub's MQTT ingest worker (issue 17): a message is acknowledged only after it was handled, in arrival order;
one that arrived on an earlier connection is left to the broker; transient database errors are retried until
they pass, other failures given up on (acknowledged and counted) after one try."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from hgen.hub.testing.services import wait_until
from hgen.hub.transports.mqtt_ingest import INGEST_WINDOW, IngestWorker, Received


class Transient(Exception):
    pass


class Harness:
    def __init__(self, handle: Callable[[Received], None]) -> None:
        self.generation = 1
        self.events: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self.counts: Counter[str] = Counter()
        self.worker = IngestWorker(self._handled(handle), lambda m: self.events.put(("ack", m.mid)),
                                   lambda: self.generation, self._count, transient=(Transient,),
                                   retry_s=(0.0,))

    def _count(self, name: str) -> None:
        self.counts[name] += 1

    def _handled(self, handle: Callable[[Received], None]) -> Callable[[Received], None]:
        def run(message: Received) -> None:
            handle(message)
            self.events.put(("handled", message.mid))
        return run

    def put(self, mid: int, generation: int | None = None) -> None:
        self.worker.put(Received(self.generation if generation is None else generation, mid, 1, "p/d/samples", b""))

    def next(self) -> tuple[str, int]:
        return self.events.get(timeout=30)


@pytest.fixture
def make() -> Iterator[Callable[[Callable[[Received], None]], Harness]]:
    made: list[Harness] = []

    def build(handle: Callable[[Received], None]) -> Harness:
        harness = Harness(handle)
        harness.worker.start()
        made.append(harness)
        return harness
    yield build
    for harness in made:
        harness.worker.stop()


def test_each_message_is_acknowledged_after_it_is_handled_in_order(make) -> None:
    h = make(lambda m: None)
    for mid in (1, 2, 3):
        h.put(mid)
    assert [h.next() for _ in range(6)] == [("handled", 1), ("ack", 1), ("handled", 2), ("ack", 2),
                                            ("handled", 3), ("ack", 3)]


def test_a_message_from_an_earlier_connection_is_neither_handled_nor_acknowledged(make) -> None:
    h = make(lambda m: None)
    h.put(7, generation=0)
    h.put(8)
    assert [h.next() for _ in range(2)] == [("handled", 8), ("ack", 8)]
    assert h.counts["mqtt_ingest_stale"] == 1


def test_transient_errors_are_retried_until_the_message_is_handled(make) -> None:
    fails = iter(range(15))  # transient failures are never given up on

    def handle(message: Received) -> None:
        if next(fails, None) is not None:
            raise Transient("database is locked")
    h = make(handle)
    h.put(1)
    assert [h.next() for _ in range(2)] == [("handled", 1), ("ack", 1)]
    assert h.counts["mqtt_ingest_retried"] == 15
    assert h.counts["mqtt_ingest_dropped"] == 0


def test_a_message_that_keeps_failing_is_given_up_on_and_acknowledged(make) -> None:
    def handle(message: Received) -> None:
        if message.mid == 1:
            raise RuntimeError("a bug")
    h = make(handle)
    h.put(1)
    h.put(2)
    assert [h.next() for _ in range(3)] == [("ack", 1), ("handled", 2), ("ack", 2)]
    assert h.counts["mqtt_ingest_dropped"] == 1


def test_stopping_while_a_message_waits_leaves_it_to_the_broker(make) -> None:
    waiting = threading.Event()

    def handle(message: Received) -> None:
        waiting.set()
        raise Transient("database unreachable")
    h = make(handle)
    h.worker._retry_s = (3600.0,)  # it would wait an hour: stop must end the wait at once
    h.put(1)
    assert waiting.wait(30)
    h.worker.stop()
    assert h.events.empty()  # never acknowledged: the broker re-sends it to the next hub process


def test_the_network_thread_waits_while_more_than_the_window_is_held_until_the_worker_lets_some_go() -> None:
    """Mosquitto before 2.0.13 oversteps Receive Maximum; the hub holds at most one message beyond it (or beyond
    max_held_bytes), as `wait_for_room` keeps paho from reading on. A message is held until it is acknowledged."""
    gate = threading.Event()
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    counts: Counter[str] = Counter()
    worker = IngestWorker(lambda m: gate.wait(30), lambda m: acked.put(m.mid), lambda: 1,
                          lambda name: counts.update([name]), max_held_bytes=1 << 20)
    worker.start()
    try:
        for mid in range(1, INGEST_WINDOW + 2):
            worker.put(Received(1, mid, 1, "p/d/samples", b"x" * 10))
        assert worker.held() == (INGEST_WINDOW + 1, 10 * (INGEST_WINDOW + 1))
        waiter = threading.Thread(target=worker.wait_for_room)
        waiter.start()
        assert wait_until(lambda: counts["mqtt_ingest_paused"] == 1)
        assert waiter.is_alive()  # nothing can have been let go: the handler waits for the gate
        gate.set()
        waiter.join(30)
        assert not waiter.is_alive()
        assert [acked.get(timeout=30) for _ in range(INGEST_WINDOW + 1)] == list(range(1, INGEST_WINDOW + 2))
        assert wait_until(lambda: worker.held() == (0, 0))
    finally:
        gate.set()
        worker.stop()


def test_bytes_held_count_until_acknowledged_or_left_to_the_broker() -> None:
    """Without a running worker, `wait_for_room` never waits; messages of a lost connection stop being held when
    one of the next arrives (the broker re-sends them), those handled once their PUBACK is queued."""
    acked: list[int] = []
    worker = IngestWorker(lambda m: None, lambda m: acked.append(m.mid), lambda: 2, lambda name: None,
                          max_held_bytes=15)
    for mid in (1, 2):
        worker.put(Received(1, mid, 1, "p/a/samples", b"x" * 10))
    worker.put(Received(1, 0, 0, "p/a/status", b"y" * 5))
    assert worker.held() == (2, 25)
    worker.wait_for_room()  # over max_held_bytes, but no worker thread to make room: returns at once
    worker.put(Received(2, 1, 1, "p/b/samples", b"z" * 3))  # reconnected: the first connection's are let go
    assert worker.held() == (1, 3)
    while (message := worker._next()) is not None:
        worker._finish(message, worker._process(message))
    assert acked == [1] and worker.held() == (0, 0)
