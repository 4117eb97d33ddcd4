"""Review faults of the MQTT ingest worker and of both sides' PUBACK bookkeeping, driven directly (no broker).

Ingest: a message that fails for a reason other than a database outage is tried once, then acknowledged and
counted (it used to be retried, stalling every device behind the one worker); a message handled while the hub
reconnected is not acknowledged (its packet id may name another message now); QoS 0 messages, which the broker's
Receive Maximum does not bound, are bounded; devices are served round-robin.

PUBACKs: a PUBACK that reaches paho's network thread while another message is being published used to leave an
"early" entry behind when it belonged to an untracked message (an update notice, a status); after the packet ids
wrapped, a later message given that id was taken as acknowledged the moment it was published."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hgen.edge_agent.config import HubConfig as AgentHubConfig
from hgen.edge_agent.transports import (
    ConnectionState,
    TransportCallbacks,
    open_transport,
)
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.transports.mqtt import MqttTransport
from hgen.hub.transports.mqtt_ingest import INGEST_WINDOW, IngestWorker, Received
from hgen.protos import hub_pb2
from pydantic import SecretStr


class Transient(Exception):
    pass


class Harness:
    """A worker whose handler blocks while `gate` is clear; handled and acknowledged mids in `events`."""

    def __init__(self, handle: Callable[[Received], None] = lambda m: None) -> None:
        self.generation = 1
        self.gate = threading.Event()
        self.gate.set()
        self.started: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.counts: Counter[str] = Counter()
        self.tries: Counter[str] = Counter()
        self._handle = handle
        self.worker = IngestWorker(self._handled, lambda m: self.events.put(("ack", m.topic)),
                                   lambda: self.generation, self._count, transient=(Transient,), retry_s=(0.0,))

    def _count(self, name: str) -> None:
        self.counts[name] += 1

    def _handled(self, message: Received) -> None:
        self.tries[message.topic] += 1
        self.started.put(message.mid)
        assert self.gate.wait(30)
        self._handle(message)
        self.events.put(("handled", message.topic))

    def put(self, device: str, mid: int, qos: int = 1) -> None:
        self.worker.put(Received(self.generation, mid, qos, f"p/{device}/samples", b""))

    def next(self) -> tuple[str, str]:
        return self.events.get(timeout=30)


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(handle: Callable[[Received], None] = lambda m: None) -> Harness:
        made.append(Harness(handle))
        made[-1].worker.start()
        return made[-1]
    yield build
    for h in made:
        h.gate.set()
        h.worker.stop()


def test_a_failure_that_is_not_transient_is_tried_once_then_acknowledged_and_counted(harness) -> None:
    def handle(message: Received) -> None:
        if "poison" in message.topic:
            raise ValueError("Timestamp is not valid")  # what an out-of-range protobuf Timestamp raised
    h = harness(handle)
    h.put("poison", 1)
    h.put("cam-b", 2)
    assert [h.next() for _ in range(3)] == [("ack", "p/poison/samples"), ("handled", "p/cam-b/samples"),
                                            ("ack", "p/cam-b/samples")]
    assert h.tries["p/poison/samples"] == 1
    assert h.counts["mqtt_ingest_dropped"] == 1


def test_a_message_handled_across_a_reconnect_is_not_acknowledged(harness) -> None:
    h = harness()
    h.gate.clear()
    h.put("cam-a", 1)
    assert h.started.get(timeout=30) == 1
    h.generation += 1  # the hub reconnected while the message was being committed
    h.gate.set()
    h.put("cam-a", 2)
    assert [h.next() for _ in range(3)] == [("handled", "p/cam-a/samples"), ("handled", "p/cam-a/samples"),
                                            ("ack", "p/cam-a/samples")]
    assert h.counts["mqtt_ingest_stale"] == 1  # mid 1 was left to the broker, which re-sends it


def test_qos0_messages_waiting_are_bounded(harness) -> None:
    h = harness()
    h.gate.clear()
    h.put("cam-a", 0, qos=0)
    h.started.get(timeout=30)  # the worker holds one; the rest wait
    for _ in range(1000):
        h.put("cam-a", 0, qos=0)
    assert h.worker.backlog() <= INGEST_WINDOW
    assert h.counts["mqtt_ingest_overflow"] == 1000 - h.worker.backlog()
    h.put("cam-b", 7)  # a QoS 1 message is never dropped
    assert h.worker.backlog() <= INGEST_WINDOW + 1
    assert h.counts["mqtt_ingest_overflow"] == 1000 - h.worker.backlog() + 1


def test_devices_are_served_round_robin(harness) -> None:
    h = harness()
    h.gate.clear()
    h.put("cam-a", 1)
    assert h.started.get(timeout=30) == 1
    for mid in range(2, 7):
        h.put("cam-a", mid)
    h.put("cam-b", 100)
    h.gate.set()
    handled = [h.started.get(timeout=30) for _ in range(6)]
    assert handled == [2, 100, 3, 4, 5, 6]  # B waits for one more of A's, not for all of them


# --- PUBACK bookkeeping -------------------------------------------------------------------------------------


@dataclass
class Info:
    """What paho's publish returns, as far as the transports read it."""

    mid: int
    rc: int = 0

    def wait_for_publish(self, timeout: float | None = None) -> None:
        pass


class FakeClient:
    """paho's publish: hands out scripted mids; `during` runs inside a publish, as a PUBACK read meanwhile."""

    def __init__(self) -> None:
        self.mids: list[int] = []
        self.during: Callable[[], None] | None = None

    def publish(self, *_args: object, **_kwargs: object) -> Info:
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return Info(self.mids.pop(0))


def answered(sample_id: str) -> hub_pb2.SampleReply:
    return hub_pb2.SampleReply(sample_id=sample_id, device_id="cam-1", status=hub_pb2.REPLY_STATUS_ANSWERED)


def test_hub_a_notice_puback_read_during_a_reply_publish_is_not_kept_for_a_later_reply(tmp_path: Path) -> None:
    app = HubApp(parse_hub_config({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "grpc": {"enabled": False}}))
    try:
        transport = MqttTransport(app.service, app.config.mqtt)  # never started: its client is replaced
        fake = FakeClient()
        transport.client = fake  # type: ignore[assignment]
        fake.mids = [5, 6, 7, 5]
        transport.publish_update(["cam-1"], hub_pb2.ModelUpdate(bundle_name="b", version="1"))  # notice: mid 5
        fake.during = lambda: transport._on_publish(None, None, 5, None, None)  # its PUBACK, mid-publish
        transport.deliver([answered("s-6")])  # mid 6
        fake.during = lambda: transport._on_publish(None, None, 7, None, None)  # s-7's own PUBACK came early
        transport.deliver([answered("s-7")])  # mid 7
        transport.deliver([answered("s-late")])  # packet ids wrapped: mid 5 again
        assert transport._inflight == {6: "s-6", 5: "s-late"}  # s-late awaits its PUBACK
        assert transport._acked == ["s-7"]
    finally:
        app.stop()


def test_agent_a_status_puback_read_during_a_sample_publish_is_not_kept_for_a_later_message() -> None:
    transport = open_transport(AgentHubConfig(url="mqtt://127.0.0.1:1", secret=SecretStr("x")), "cam-1",
                               TransportCallbacks(lambda r: None, lambda u: None, lambda *a: None))
    fake = FakeClient()
    transport.client = fake  # type: ignore[attr-defined]  # never started: its client is replaced
    transport._set_state(ConnectionState.CONNECTED)
    fake.mids = [5, 6, 7, 5]
    transport.report_status(hub_pb2.DeviceStatus(device_id="cam-1", online=True))  # status: mid 5
    request = lambda sid: hub_pb2.AnnotationRequest(samples=[hub_pb2.Sample(sample_id=sid)])
    fake.during = lambda: transport._on_publish(None, None, 5, None, None)  # the status's PUBACK, mid-publish
    assert transport.send(request("s-6"))  # mid 6
    fake.during = lambda: transport._on_publish(None, None, 7, None, None)  # s-7's own PUBACK came early
    assert transport.send(request("s-7"))  # mid 7
    assert transport.send(request("s-late"))  # packet ids wrapped: mid 5 again
    assert transport.in_flight() == frozenset({"s-6", "s-late"})  # paho holds s-late until its PUBACK


def test_acknowledgements_go_out_in_arrival_order_although_devices_are_served_round_robin() -> None:
    """MQTT 4.6: PUBACKs in the order the PUBLISHes came. Served round-robin, a (1, 4, 2, 3) order went out."""
    from hgen.hub.transports.mqtt_ingest import IngestWorker, Received

    handled: list[int] = []
    acked: list[int] = []
    worker = IngestWorker(lambda m: handled.append(m.mid), lambda m: acked.append(m.mid), lambda: 1, lambda name: None)
    for mid, device in ((1, "a"), (2, "a"), (3, "b"), (4, "c")):
        worker.put(Received(1, mid, 1, f"hgen/v1/{device}/samples", b""))
    while (message := worker._next()) is not None:
        worker._finish(message, worker._process(message))
    assert handled == [1, 3, 4, 2]  # round-robin: a, b, c, then a again
    assert acked == [1, 2, 3, 4]
