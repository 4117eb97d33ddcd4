"""What one device can make the hub hold over MQTT, over a real Mosquitto (with authentication) and a real hub.

- A device status was capped only at mqtt.max_payload_bytes (8 MiB), and each one rewrote the device's row that the
  operator page reads at every refresh. Now mqtt.max_status_bytes (64 KiB, like grpc.max_status_bytes) refuses a
  larger one before it is decoded, counted `status_too_large`, and the stored status stays as it was.
- The hub asks for Receive Maximum 64, but Mosquitto before 2.0.13 (eclipse/mosquitto#2306; Debian bookworm ships
  2.0.11) sends up to 64 more messages at each PUBACK: one device's flood had the hub hold nearly all of
  it, up to 8 MiB a message. Now the hub reads no further packet while it holds more than 64 QoS 1 messages or more
  than mqtt.max_held_bytes (TCP back-pressure), loses nothing, and the other devices' samples still get in.

"Held" is measured from outside the ingest: a message counts from the moment paho hands it to the hub until the hub
asks paho to acknowledge it.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Device, Sample
from hgen.hub.testing.device import MqttDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.services import Broker, mosquitto_binary, wait_until
from hgen.hub.transports.mqtt import MqttTransport
from hgen.hub.transports.mqtt_ingest import INGEST_WINDOW
from hgen.protos import hub_pb2

A, B = "cam-a", "cam-b"
WAIT_S = 120.0


@pytest.fixture
def hub(tmp_path: Path, broker: Broker, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A hub on the broker (gRPC off) with A and B enrolled and connected as MQTT devices (`hub.devices`)."""
    extra = getattr(request, "param", {})
    config = parse_hub_config({"devices": [A, B], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                               "grpc": {"enabled": False}, "limits": {"max_open_samples_per_device": 0},
                               "mqtt": broker.hub_mqtt(**extra)})
    app = HubApp(config).start()
    devices: dict[str, MqttDevice] = {}
    try:
        for device, credential in enroll(app, A, B).items():
            devices[device] = MqttDevice(broker.host, broker.port, device, ReplyLog(), password=credential.secret)
        app.devices = devices
        yield app
    finally:
        for device in devices.values():
            device.close()
        app.stop()


class HeldProbe:
    """Wraps the hub's paho client: messages handed to the hub and not yet acknowledged by it, and their bytes, at
    the arrival of each message (the most the hub held)."""

    def __init__(self, transport: MqttTransport) -> None:
        self._lock = threading.Lock()
        self._unacked: dict[int, int] = {}  # mid -> payload bytes
        self.peak_messages = self.peak_bytes = self.largest = 0
        client = transport.client
        on_message, ack = client.on_message, client.ack

        def arrived(c: Any, userdata: Any, message: Any) -> None:
            with self._lock:
                self._unacked[message.mid] = len(message.payload)
                self.peak_messages = max(self.peak_messages, len(self._unacked))
                self.peak_bytes = max(self.peak_bytes, sum(self._unacked.values()))
                self.largest = max(self.largest, len(message.payload))
            on_message(c, userdata, message)

        def acknowledged(mid: int, qos: int) -> Any:
            with self._lock:
                self._unacked.pop(mid, None)
            return ack(mid, qos)

        client.on_message = arrived
        client.ack = acknowledged  # type: ignore[method-assign]


def flood(hub: Any, count: int, image: hub_pb2.Image) -> list[str]:
    """A publishes `count` QoS 1 sample messages (one sample each); returns once the broker holds them all."""
    samples = [make_sample(A, image=image) for _ in range(count)]
    hub.devices[A].submit([make_request(A, [s], m=1) for s in samples], timeout=WAIT_S)
    return [s.sample_id for s in samples]


def b_sample_and_all_stored(hub: Any, flooded: list[str]) -> None:
    """B's sample, published behind A's flood, gets in; so does every one of A's (each exactly once)."""
    late = make_sample(B)
    hub.devices[B].submit([make_request(B, [late], m=1)], timeout=WAIT_S)
    kb = hub.service.kb
    assert wait_until(lambda: kb.sample_exists(late.sample_id), WAIT_S)
    assert wait_until(lambda: kb.count(Sample) == len(flooded) + 1, WAIT_S)
    assert all(kb.sample_exists(s) for s in flooded)
    assert hub.service.metrics.get("mqtt_ingest_stale") == 0  # no reconnect: every message came once


# --- status cap -----------------------------------------------------------------------------------------------


def stored_status(hub: Any) -> bytes:
    with hub.service.kb.session() as s:
        return s.get(Device, A).last_status or b""


def test_a_status_over_max_status_bytes_is_refused_and_the_stored_one_kept(hub: Any) -> None:
    device = hub.devices[A]
    small = hub_pb2.DeviceStatus(device_id=A, online=True, metrics={"queue": 1.0}).SerializeToString()
    device.publish(small, "status").wait_for_publish(WAIT_S)
    assert wait_until(lambda: stored_status(hub) == small, WAIT_S)
    big = hub_pb2.DeviceStatus(device_id=A, online=True, metrics={"m" + "k" * 100_000: 1.0}).SerializeToString()
    assert 64 * 1024 < len(big) < hub.config.mqtt.max_payload_bytes  # within the sample cap, over the status cap
    device.publish(big, "status").wait_for_publish(WAIT_S)
    after = make_sample(A)  # A's messages are handled in arrival order: once this is stored, the status was seen
    device.submit([make_request(A, [after], m=1)])
    assert wait_until(lambda: hub.service.kb.sample_exists(after.sample_id), WAIT_S)
    assert stored_status(hub) == small
    assert hub.service.metrics.get("status_too_large") == 1


# --- what the hub holds ---------------------------------------------------------------------------------------


def test_a_flooding_device_cannot_make_the_hub_hold_more_than_receive_maximum(hub: Any, tmp_path: Path) -> None:
    """The knowledge base is locked until the broker holds A's whole flood, so PUBACKs then start with the broker's
    queue full: Mosquitto 2.0.11 sent the old hub 300 of 300 messages at once (many hundreds in the reviewer's runs)."""
    probe = HeldProbe(hub.transport(MqttTransport))
    lock = sqlite3.connect(tmp_path / "hub.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # ingest waits; the broker sends Receive Maximum and no more (no PUBACKs yet)
    try:
        flooded = flood(hub, 300, png_image(seed=1))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    b_sample_and_all_stored(hub, flooded)
    assert probe.peak_messages <= INGEST_WINDOW + 1  # the one read before the hub could tell


@pytest.mark.parametrize("hub", [{"max_held_bytes": 16 * 1024}], indirect=True)
def test_the_hub_holds_no_more_than_max_held_bytes(hub: Any) -> None:
    """Binding on any broker: 64 messages of 4 KiB are four times the cap."""
    probe = HeldProbe(hub.transport(MqttTransport))
    flooded = flood(hub, 120, png_image(size=64, seed=2))
    b_sample_and_all_stored(hub, flooded)
    assert probe.largest > 4000
    assert probe.peak_bytes <= 16 * 1024 + probe.largest  # at most one message beyond the cap
    assert hub.service.metrics.get("mqtt_ingest_paused") > 0


# --- broker version -------------------------------------------------------------------------------------------


def installed_mosquitto() -> tuple[int, ...]:
    shown = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", shown.stdout + shown.stderr)
    assert found, shown
    return tuple(int(part) for part in found.groups())


def test_the_hub_warns_about_a_mosquitto_older_than_2_0_13(tmp_path: Path, broker: Broker,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """The ACL the hub writes (mqtt.access) lets it read $SYS/broker/version."""
    config = parse_hub_config({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                               "grpc": {"enabled": False}, "mqtt": broker.hub_mqtt()})
    caplog.set_level(logging.INFO, logger="hgen.hub.transports.mqtt")
    app = HubApp(config).start()
    try:
        transport = app.transport(MqttTransport)
        assert wait_until(lambda: transport.broker_version is not None, WAIT_S)
        installed = installed_mosquitto()
        assert transport.broker_version == installed
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "2.0.13" in r.getMessage()]
        assert len(warned) == (1 if installed < (2, 0, 13) else 0)
    finally:
        app.stop()
