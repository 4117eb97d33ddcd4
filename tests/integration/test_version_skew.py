"""Version skew: a hub upgraded ahead of its devices serves their older agents (hgen.v1 is unchanged for them), and
must say which devices still run one. Before, nothing on the wire named the agent: an operator could not tell which
devices an upgrade had left behind. Agents now stamp every status they send (also the MQTT last will) with their
release and protocol revision; the hub stores it on the device's row and logs each device's agent once.

OLD_AGENT_STATUS is what an agent of commit 68df083 (the release before agents reported their version) sends: made
with that commit's code (a git worktree of 68df083 on PYTHONPATH as `hgen`, its stubs generated from the same
hub.proto) as `Telemetry().device_status("cam-old", "lenet5-digits", "1.0.0")` with `at` set to 1796000000 s,
serialized and hex-encoded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hgen.edge_agent.config import HubConfig
from hgen.edge_agent.transports.base import ConnectionState, TransportCallbacks, parse_endpoint
from hgen.edge_agent.transports.grpc import GrpcTransport
from hgen.edge_agent.transports.mqtt import MqttTransport
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Device
from hgen.hub.testing.device import MqttDevice, ReplyLog, enroll, grpc_hub, grpc_target
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.services import Broker, wait_until
from hgen.protos import PROTOCOL_REVISION, hub_pb2

OLD_AGENT_STATUS = bytes.fromhex(
    "0a0763616d2d6f6c6410011a0d6c656e6574352d6469676974732205312e302e302a06088092b3d80639000000000000f0bf4a11"
    "0a066672616d65731100000000000000004a100a0566757365641100000000000000004a140a09726f6c6c6261636b7311000000"
    "00000000004a1a0a0f756e6b6e6f776e5f7265706c6965731100000000000000004a0e0a036670731100000000000000004a190a"
    "0e6672616d65735f726573697a65641100000000000000004a170a0c6c6174655f7265706c6965731100000000000000004a100a"
    "0573776170731100000000000000004a170a0c73656e745f73616d706c65731100000000000000004a190a0e6672616d65735f69"
    "6e76616c69641100000000000000004a1b0a10696e666572656e63655f6572726f72731100000000000000004a1b0a10696e6665"
    "72656e63655f6d735f7035301100000000000000004a190a0e6672616d65735f64726f707065641100000000000000004a1b0a10"
    "696e666572656e63655f6d735f7039391100000000000000004a1a0a0f73686172655f746f5f70656f706c651100000000000000"
    "004a190a0e6f7574626f785f64726f707065641100000000000000004a140a09657363616c617465641100000000000000004a1b"
    "0a106275646765745f6578686175737465641100000000000000004a1b0a10757064617465735f7265706c616365641100000000"
    "000000004a190a0e73776170735f72656a65637465641100000000000000004a1b0a106c61626f75725f65786861757374656411"
    "00000000000000004a120a077265706c6965731100000000000000004a1c0a11736f757263655f7265636f6e6e65637473110000"
    "0000000000004a160a0b6875625f726566757365641100000000000000004a1c0a116475706c69636174655f7265706c69657311"
    "00000000000000004a110a066175646974731100000000000000004a130a086465636c696e65641100000000000000004a1c0a11"
    "6672616d65735f756e66616d696c6961721100000000000000004a170a0c726174655f6c696d697465641100000000000000004a"
    "160a0b73696e6b5f6572726f72731100000000000000004a130a0874696d656f757473110000000000000000"
)
LOGGER = "hgen.hub.transports.agent_versions"
UNREPORTED = "'cam-old' does not report its agent's version"


def stored_status(app: Any, device: str) -> hub_pb2.DeviceStatus | None:
    with app.service.kb.session() as s:
        row = s.get(Device, device)
        return hub_pb2.DeviceStatus.FromString(row.last_status) if row is not None and row.last_status else None


def callbacks(states: list[ConnectionState] | None = None, changed: threading.Event | None = None
              ) -> TransportCallbacks:
    def on_state(state: ConnectionState, *_: object) -> None:
        if states is not None and changed is not None:
            states.append(state)
            changed.set()
    return TransportCallbacks(on_reply=lambda r: None, on_update=lambda n: None, on_state=on_state)


def this_release_named(status: hub_pb2.DeviceStatus | None) -> bool:
    return status is not None and status.agent_version == importlib.metadata.version("hgen") \
        and status.protocol_revision == PROTOCOL_REVISION


@pytest.fixture
def grpc_app(tmp_path: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    app, issued = grpc_hub(tmp_path / "hub.db", ["cam-old", "cam-new"])
    yield app, issued
    app.stop()


def test_grpc_hub_names_the_device_whose_old_agent_reports_no_version(grpc_app, caplog) -> None:
    """The old agent's exact status bytes, sent twice: stored and acknowledged as before, logged once by name."""
    app, issued = grpc_app
    caplog.set_level(logging.INFO, logger=LOGGER)
    with grpc.insecure_channel(grpc_target(app)) as channel:
        report = channel.unary_unary("/hgen.v1.AnnotationHub/ReportStatus",  # bytes as they are, not re-encoded
                                     response_deserializer=hub_pb2.StatusAck.FromString)
        token = (("authorization", f"Bearer {issued['cam-old'].bearer}"),)
        for _ in range(2):
            assert report(OLD_AGENT_STATUS, timeout=10, metadata=token).known_device
    assert stored_status(app, "cam-old").bundle_version == "1.0.0"
    named = [r for r in caplog.records if UNREPORTED in r.getMessage()]
    assert len(named) == 1 and "revision" in named[0].getMessage()
    assert app.service.metrics.get("agent_version_unreported") == 1


def test_grpc_agent_status_names_its_release_and_the_hub_stores_it(grpc_app, caplog) -> None:
    app, issued = grpc_app
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = f"grpc://{grpc_target(app)}"
    transport = GrpcTransport(parse_endpoint(url), HubConfig(url=url, secret=issued["cam-new"].secret), "cam-new",
                              callbacks())
    try:
        transport.report_status(hub_pb2.DeviceStatus(device_id="cam-new", online=True, bundle_version="1.0.0"))
    finally:
        transport.stop()
    assert this_release_named(stored_status(app, "cam-new"))
    assert not any("does not report" in r.getMessage() for r in caplog.records)
    assert app.service.metrics.get("agent_version_unreported") == 0


def test_mqtt_hub_names_the_old_agent_and_stores_the_new_agents_release(tmp_path, broker: Broker, caplog) -> None:
    """Over a real broker: the old agent's status names it; the new agent's status, and its offline status at stop,
    carry its release (the offline one replaces the stored status, so it must too)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    app = HubApp(parse_hub_config({"devices": ["cam-old", "cam-new"],
                                   "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "mqtt": broker.hub_mqtt(client_id="hub-version-skew")})).start()
    try:
        issued = enroll(app, "cam-old", "cam-new")
        old = MqttDevice(broker.host, broker.port, "cam-old", ReplyLog(), password=issued["cam-old"].secret)
        try:
            old.publish(OLD_AGENT_STATUS, kind="status").wait_for_publish(10)
            assert wait_until(lambda: any(UNREPORTED in r.getMessage() for r in caplog.records), 30)
        finally:
            old.close()
        states: list[ConnectionState] = []
        changed = threading.Event()
        transport = MqttTransport(parse_endpoint(broker.url), HubConfig(url=broker.url,
                                  secret=issued["cam-new"].secret), "cam-new", callbacks(states, changed))
        transport.start()
        try:
            assert wait_until(lambda: ConnectionState.CONNECTED in states, 30)
            transport.report_status(hub_pb2.DeviceStatus(device_id="cam-new", online=True))
            assert wait_until(lambda: this_release_named(stored_status(app, "cam-new")), 30)
        finally:
            transport.stop()
        assert wait_until(lambda: (lambda s: s is not None and not s.online and this_release_named(s))(
            stored_status(app, "cam-new")), 30)
    finally:
        app.stop()
