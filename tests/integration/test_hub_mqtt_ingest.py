"""The hub's MQTT ingest (issue 17): the network thread keeps serving while the knowledge base is locked, and a
burst of re-asks crossing their reply is not answered again and again.

Before, samples were committed on paho's network thread: waiting for SQLite's write lock it stopped reading its
socket, PUBACKs for its replies went unread and the broker dropped it on the keep-alive. Here a second
connection holds the SQLite write lock while the device's samples arrive; the hub must still complete a publish
(its PUBACK is read by that same thread), stay connected, and store every sample once the lock is released.
Real Mosquitto with authentication, real SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.device import MqttDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import Broker, wait_until
from hgen.hub.transports.mqtt import ANSWER_AGAIN_S, ConnectionState, MqttTransport
from hgen.protos import hub_pb2

DEVICE = "cam-ingest"


def test_network_thread_serves_while_the_knowledge_base_is_locked(tmp_path: Path, broker: Broker) -> None:
    db = tmp_path / "hub.db"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{db}"},
                               "mqtt": broker.hub_mqtt()})
    app = HubApp(config).start()
    try:
        device = MqttDevice(broker.host, broker.port, DEVICE, ReplyLog(),
                            password=enroll(app, DEVICE)[DEVICE].secret)
        transport = app.transport(MqttTransport)
        lock = sqlite3.connect(db, timeout=30, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the crowd's transaction, say: every writer waits for it
        samples = [make_sample(DEVICE) for _ in range(20)]
        device.submit([make_request(DEVICE, samples[i:i + 5], m=1) for i in range(0, 20, 5)])
        assert wait_until(lambda: app.service.metrics.get("mqtt_messages_received") >= 4)
        notice = hub_pb2.ModelUpdate(bundle_name="b", version="v1")
        (handle,) = transport.publish_update([DEVICE], notice)
        handle.wait_for_publish(10)  # the PUBACK is read by the network thread the samples arrived on
        assert handle.is_published()
        assert transport.state is ConnectionState.CONNECTED
        assert lock.execute("SELECT count(*) FROM samples").fetchone() == (0,)  # nothing written meanwhile
        lock.execute("ROLLBACK")
        lock.close()
        assert wait_until(lambda: all(app.service.kb.sample_exists(s.sample_id) for s in samples))
        assert app.service.kb.count(Sample) == len(samples)
        device.close()
    finally:
        app.stop()


class CountingLog(ReplyLog):
    """Counts every reply received, repeats included (ReplyLog keeps distinct reply ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0

    def add(self, reply: hub_pb2.SampleReply) -> None:
        with self._cond:
            self.received += 1
        super().add(reply)


def test_a_burst_of_re_asks_crossing_the_reply_is_not_answered_again(tmp_path: Path, broker: Broker) -> None:
    """Asks a device sent while the hub was away arrive in a burst after the reply they ask for was sent; each
    used to cost the device one more copy of it. Within ANSWER_AGAIN_S of the reply's last send a re-ask is not
    answered; after it, it is (the reply may have been lost), from the knowledge base."""
    clock = Clock(1000.0)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url}, "mqtt": broker.hub_mqtt()})
    service = HubService(config, KnowledgeBase.open(url, image_dir=tmp_path / "img", clock=clock), clock=clock)
    service.annotators.register("a", simulated=True)
    transport = MqttTransport(service, config.mqtt)
    transport.start()
    try:
        log = CountingLog()
        app = SimpleNamespace(config=config, service=service)
        device = MqttDevice(broker.host, broker.port, DEVICE, log, password=enroll(app, DEVICE)[DEVICE].secret)
        sample = make_sample(DEVICE)
        ask = lambda: device.submit([make_request(DEVICE, [sample], m=1, now=clock.now)])  # noqa: E731
        ask()
        assert wait_until(lambda: service.kb.sample_exists(sample.sample_id))
        task = service.annotators.next_task("a")
        service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="a", class_id=1,
                                                        operations=1, simulated=True))
        assert log.wait_for(1, 30)
        for _ in range(3):
            ask()  # the burst: re-asks crossing the reply
        assert wait_until(lambda: service.metrics.get("mqtt_answer_again_skipped") == 3)
        clock.now += ANSWER_AGAIN_S  # the device still has no reply, say, and asks again later
        ask()
        assert wait_until(lambda: log.received == 2)
        assert len(log.reply_ids[sample.sample_id]) == 1  # the same reply, from the knowledge base
        assert service.metrics.get("mqtt_answer_again_skipped") == 3
        device.close()
    finally:
        transport.stop()
        service.close()
