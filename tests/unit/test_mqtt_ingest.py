"""The hub's MQTT ingest worker (issue 17): a message is acknowledged only after it was handled, in arrival order;
one that arrived on an earlier connection is left to the broker; transient database errors are retried until
they pass, other failures given up on (acknowledged and counted) after one try."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from hgen.hub.transports.mqtt_ingest import IngestWorker, Received


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
