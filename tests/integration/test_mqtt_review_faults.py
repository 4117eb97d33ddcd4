"""Review faults of the MQTT link, over a real Mosquitto configured as hub/broker/mosquitto.conf.example ships it
(hub-managed accounts and ACL; devices and hubs on separate listeners) and a real hub.

- An enrolled device connecting with another client's id (the hub's, another device's) took over its session:
  the owner was disconnected and a clean start wiped its persistent session. Devices' listeners now bind the
  client id to the user name.
- A QoS 0 flood on a samples topic grew the hub's ingest queue without limit (Receive Maximum bounds QoS 1 only).
- MQTT status messages skipped the payload cap; the broker now also caps packets.
- A broker-ACL sync in another process could restore a revoked device.
- `announce` reported success when the broker never acknowledged the notice.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hgen.hub.transports.mqtt as hub_mqtt
import paho.mqtt.client as mqtt
import pytest
from hgen.hub import broker_acl
from hgen.hub.app import HubApp
from hgen.hub.broker_acl import broker_accepts, device_registry
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Device
from hgen.hub.testing.attacker import MqttProbe
from hgen.hub.testing.device import MqttDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import HUB_USER, Broker, wait_until
from hgen.hub.transports.base import AnnounceError
from hgen.hub.transports.mqtt import MqttTransport
from hgen.protos import hub_pb2
from hgen.protos.mqtt import QOS, session_properties, topic

A, B = "cam-a", "cam-b"
WAIT_S = 30.0


@pytest.fixture
def hub(tmp_path: Path, broker: Broker, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A hub on the broker (gRPC off), with A and B enrolled; `hub.secrets` their passwords."""
    extra = getattr(request, "param", {})
    config = parse_hub_config({"devices": [A, B], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                               "grpc": {"enabled": False}, "mqtt": broker.hub_mqtt(client_id="hgen-hub", **extra)})
    app = HubApp(config).start()
    try:
        app.secrets = {d: c.secret for d, c in enroll(app, A, B).items()}
        yield app
    finally:
        app.stop()


def client(broker: Broker, username: str, password: str, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(username, password)
    return c


def connect(c: mqtt.Client, broker: Broker, clean_start: bool, port: int | None = None) -> bool:
    """Connect and wait for the CONNACK; the session-present flag."""
    answer: list[bool] = []
    done = threading.Event()
    c.on_connect = lambda _c, _u, flags, rc, _p: (answer.append(flags.session_present), done.set())
    c.connect(broker.host, port or broker.port, 30, clean_start=clean_start, properties=session_properties(3600))
    c.loop_start()
    assert done.wait(WAIT_S), "no CONNACK"
    return answer[0]


# --- 1. client ids are bound to accounts --------------------------------------------------------------------


def test_a_device_using_the_hubs_client_id_does_not_disconnect_the_hub(hub: Any, broker: Broker) -> None:
    transport = hub.transport(MqttTransport)
    drops: list[str] = []
    own = transport.client.on_disconnect
    transport.client.on_disconnect = lambda *args: (drops.append(str(args[3])), own(*args))
    thief = MqttProbe(broker.host, broker.port, A, hub.secrets[A], "hgen-hub")  # A's own, valid account
    assert thief.accepted
    device = MqttDevice(broker.host, broker.port, B, ReplyLog(), password=hub.secrets[B])
    sample = make_sample(B)
    device.submit([make_request(B, [sample], m=1)])  # sent after the broker answered the thief
    assert wait_until(lambda: hub.service.kb.sample_exists(sample.sample_id))
    assert drops == []  # the hub kept its connection (and so its session) throughout
    thief.close()
    device.close()


def test_a_device_using_another_devices_client_id_does_not_wipe_its_session(hub: Any, broker: Broker) -> None:
    """B keeps a persistent session and goes offline; A connects with B's client id and a clean start. The reply
    the hub sends meanwhile must still reach B when it comes back."""
    owner = client(broker, B, hub.secrets[B], "agent-cam-b")
    connect(owner, broker, clean_start=False)
    subscribed = threading.Event()
    owner.on_subscribe = lambda *_a: subscribed.set()
    owner.subscribe(topic("hgen/v1", B, "replies"), QOS)
    assert subscribed.wait(WAIT_S)
    owner.disconnect()
    owner.loop_stop()

    thief = client(broker, A, hub.secrets[A], "agent-cam-b")
    connect(thief, broker, clean_start=True)
    thief.disconnect()
    thief.loop_stop()

    reply = hub_pb2.SampleReply(sample_id="s-1", device_id=B, status=hub_pb2.REPLY_STATUS_ANSWERED)
    hub_side = client(broker, HUB_USER, broker.access.hub_password, "hub-test-publisher")  # type: ignore[union-attr]
    connect(hub_side, broker, clean_start=True, port=broker.hub_port)
    hub_side.publish(topic("hgen/v1", B, "replies"), reply.SerializeToString(), QOS).wait_for_publish(WAIT_S)

    back = client(broker, B, hub.secrets[B], "agent-cam-b")
    got = threading.Event()
    back.on_message = lambda _c, _u, message: got.set()
    assert connect(back, broker, clean_start=False)  # its session survived
    assert got.wait(WAIT_S)  # with the reply queued in it
    for c in (back, hub_side):
        c.disconnect()
        c.loop_stop()


# --- 2. QoS 0 samples ---------------------------------------------------------------------------------------


def test_qos0_samples_are_dropped_and_counted(hub: Any, broker: Broker) -> None:
    flood = client(broker, A, hub.secrets[A], "agent-cam-a")
    connect(flood, broker, clean_start=True)
    samples = [make_sample(A) for _ in range(50)]
    for s in samples:
        flood.publish(topic("hgen/v1", A, "samples"), make_request(A, [s], m=1).SerializeToString(), qos=0)
    last = make_sample(A)
    flood.publish(topic("hgen/v1", A, "samples"), make_request(A, [last], m=1).SerializeToString(),
                  QOS).wait_for_publish(WAIT_S)
    assert wait_until(lambda: hub.service.kb.sample_exists(last.sample_id))  # it came after all the QoS 0 ones
    metrics = hub.service.metrics
    assert metrics.get("mqtt_qos0_dropped") == metrics.get("mqtt_messages_received") - 1 > 0
    assert not any(hub.service.kb.sample_exists(s.sample_id) for s in samples)
    flood.disconnect()
    flood.loop_stop()


# --- 4. status size ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub", [{"max_payload_bytes": 4096}], indirect=True)
def test_a_status_over_the_payload_cap_is_refused_and_counted(hub: Any, broker: Broker) -> None:
    big = hub_pb2.DeviceStatus(device_id=A, online=True, metrics={"m" + "k" * 8000: 1.0}).SerializeToString()
    small = hub_pb2.DeviceStatus(device_id=A, online=True, metrics={"queue": 1.0}).SerializeToString()
    device = MqttProbe(broker.host, broker.port, A, hub.secrets[A], "agent-cam-a")
    assert device.publish(topic("hgen/v1", A, "status"), big, retain=True) == 0
    assert device.publish(topic("hgen/v1", A, "status"), small, retain=True) == 0

    def stored() -> bytes:
        with hub.service.kb.session() as s:
            return s.get(Device, A).last_status or b""
    assert wait_until(lambda: stored() == small)  # the small one came after the big one
    assert hub.service.metrics.get("status_too_large") == 1  # the smaller of mqtt.max_status_bytes and this cap
    device.close()


def test_the_broker_disconnects_a_client_whose_packet_exceeds_its_cap(hub: Any, broker: Broker) -> None:
    device = client(broker, A, hub.secrets[A], "agent-cam-a")
    connect(device, broker, clean_start=True)
    outcome: list[str] = []
    done = threading.Event()
    device.on_publish = lambda *_a: (outcome.append("acknowledged"), done.set())
    device.on_disconnect = lambda *_a: (outcome.append("disconnected"), done.set())
    device.publish(topic("hgen/v1", A, "status"), b"x" * (10 << 20), QOS, retain=True)
    assert done.wait(WAIT_S)
    assert outcome[0] == "disconnected"
    device.loop_stop()


# --- 5. access files across processes -----------------------------------------------------------------------


class FlockSpy:
    """hgen.hub.broker_acl's `fcntl` with `flock` reporting which threads asked for the lock."""

    def __init__(self) -> None:
        import fcntl

        self._real = fcntl
        self.asked: set[str] = set()
        self.changed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def flock(self, fd: int, operation: int) -> None:
        with self.changed:
            self.asked.add(threading.current_thread().name)
            self.changed.notify_all()
        self._real.flock(fd, operation)


def test_a_concurrent_sync_cannot_restore_a_revoked_device(hub: Any, broker: Broker,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync (another hub process starting, say) reads the credentials just before `revoke-device` commits, and
    writes after the revoke's own sync. Two registries stand for the two processes."""
    spy = FlockSpy()
    monkeypatch.setattr(broker_acl, "fcntl", spy, raising=False)
    starting, cli = device_registry(hub.config, hub.service.kb), device_registry(hub.config, hub.service.kb)
    access = starting.on_change.__self__  # type: ignore[union-attr]
    read, go = threading.Event(), threading.Event()
    real = access.device_hashes

    def paused_hashes() -> Any:
        hashes = real()
        read.set()
        assert go.wait(WAIT_S)
        return hashes
    access.device_hashes = paused_hashes
    sync = threading.Thread(target=starting.sync, name="starting-hub")
    sync.start()
    assert read.wait(WAIT_S)  # it read B as active
    revoke_done = threading.Event()
    revoke = threading.Thread(target=lambda: (cli.revoke(B), revoke_done.set()), name="revoke-cli")
    revoke.start()
    with spy.changed:  # the revoke returned, or its sync waits for the lock the other sync holds
        assert spy.changed.wait_for(lambda: revoke_done.is_set() or "revoke-cli" in spy.asked, WAIT_S)
    go.set()
    sync.join(WAIT_S)
    revoke.join(WAIT_S)
    assert revoke_done.is_set()
    assert not broker_accepts(hub.config.mqtt, B, hub.secrets[B])
    assert broker_accepts(hub.config.mqtt, A, hub.secrets[A])


# --- 6. announce --------------------------------------------------------------------------------------------


def test_announce_fails_when_the_broker_never_acknowledges(hub: Any, broker: Broker,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_mqtt, "PUBACK_TIMEOUT_S", 0.5)
    transport = hub.transport(MqttTransport)
    broker.process.send_signal(signal.SIGSTOP)  # hung: the socket stays open, no PUBACK comes
    try:
        with pytest.raises(AnnounceError, match="did not acknowledge"):
            transport.announce(hub_pb2.ModelUpdate(bundle_name="net", version="1.0.1"), [A])
    finally:
        broker.process.send_signal(signal.SIGCONT)
