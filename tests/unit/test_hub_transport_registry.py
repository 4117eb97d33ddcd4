"""The hub's transports are registered backends: the app starts what the registry and config enable, the
publisher records then announces through each, and a new transport needs no change to either."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hgen.hub.app import HubApp
from hgen.hub.config import HubConfig, parse_hub_config
from hgen.hub.errors import HubError
from hgen.hub.transports import HUB_TRANSPORTS, HubTransport, UnknownHubTransportError
from hgen.hub.transports.base import AnnounceError
from hgen.hub.transports.grpc_server import GrpcTransport
from hgen.hub.transports.mqtt import MqttTransport
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2

EVENTS: list[str] = []


class LoopbackTransport(HubTransport):
    """A transport only this test registers: it records what the app and the publisher ask of it."""

    name = "loopback"

    @classmethod
    def section(cls, config: HubConfig) -> Any:
        return SimpleNamespace(enabled=True)  # the hub config has no `loopback:` section

    def start(self) -> None:
        EVENTS.append("start loopback")

    def stop(self) -> None:
        EVENTS.append("stop loopback")

    @property
    def fetch_uri(self) -> str:
        return "loopback://here"

    def describe(self) -> str:
        return "loopback"

    def announce(self, notice: hub_pb2.ModelUpdate, device_ids: Sequence[str]) -> None:
        EVENTS.append(f"announce {notice.bundle_name} {notice.version} to {','.join(device_ids)}")


@pytest.fixture
def loopback() -> Iterator[type[LoopbackTransport]]:
    HUB_TRANSPORTS.add(LoopbackTransport.name, LoopbackTransport)
    EVENTS.clear()
    try:
        yield LoopbackTransport
    finally:
        HUB_TRANSPORTS._items.pop(LoopbackTransport.name)  # registries have no removal: tests only


def hub_config(tmp_path: Path, **sections: Any) -> HubConfig:
    return parse_hub_config({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                             "grpc": {"port": free_port()}, **sections})


def test_every_registered_transport_names_its_config_section() -> None:
    config = parse_hub_config({})
    assert HUB_TRANSPORTS.names() == ["grpc", "mqtt"]
    for name, kind in HUB_TRANSPORTS.items():
        assert kind.name == name
        assert isinstance(kind.enabled_in(config), bool), f"hub config section {name!r} has no `enabled`"
    with pytest.raises(UnknownHubTransportError, match="valid choices: grpc, mqtt"):
        HUB_TRANSPORTS.get("amqp")


def test_the_app_starts_announces_through_and_stops_a_newly_registered_transport(
        tmp_path: Path, loopback: type[LoopbackTransport]) -> None:
    archive = tmp_path / "net.hgb"
    archive.write_bytes(b"bundle bytes")
    app = HubApp(hub_config(tmp_path, grpc={"enabled": False})).start()
    try:
        assert [t.name for t in app.transports] == ["loopback"]
        assert "loopback" in app.describe()
        notice = app.publisher().publish_file(archive, "net", "1.0.1", b"sig", ["cam-1", "cam-2"])
        assert EVENTS == ["start loopback", "announce net 1.0.1 to cam-1,cam-2"]
        assert notice.fetch_uri == "loopback://here"
        record = app.service.kb.bundle("net", "1.0.1")  # recorded before it is announced
        assert record is not None and record.size == len(b"bundle bytes") and record.fetch_uri == "loopback://here"
    finally:
        app.stop()
    assert EVENTS[-1] == "stop loopback"


def test_a_disabled_transport_is_not_built_and_asking_for_it_says_how_to_enable_it(tmp_path: Path) -> None:
    app = HubApp(hub_config(tmp_path)).start()
    try:
        assert [type(t) for t in app.transports] == [GrpcTransport]
        grpc_transport = app.transport(GrpcTransport)
        assert grpc_transport.port > 0 and f"gRPC port {grpc_transport.port}" in app.describe()
        assert app.publisher().fetch_uri() == f"grpc://127.0.0.1:{grpc_transport.port}"
        with pytest.raises(HubError, match="no mqtt transport .*enable `mqtt`"):
            app.transport(MqttTransport)
    finally:
        app.stop()


def test_a_hub_without_transports_still_records_bundles_with_no_fetch_address(tmp_path: Path) -> None:
    """`hgen-hub retrain` from the command line: devices of a serving hub find the record by name."""
    archive = tmp_path / "net.hgb"
    archive.write_bytes(b"x" * 3_000_000)  # more than one hashing chunk
    app = HubApp(hub_config(tmp_path, grpc={"enabled": False}))
    try:
        notice = app.publisher().publish_file(archive, "net", "2.0.0", b"")
        assert notice.fetch_uri == "" and notice.size == 3_000_000
        assert notice.sha256 == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    finally:
        app.stop()


def test_a_notice_made_while_the_broker_is_away_is_queued_and_one_paho_refuses_is_a_typed_error(
        tmp_path: Path) -> None:
    """Not connected: paho keeps the notice for the reconnect, so announcing goes on (a retrain is not failed for
    it). A full queue: paho drops it, and the publisher gets an AnnounceError naming device and version."""
    app = HubApp(hub_config(tmp_path, grpc={"enabled": False}))
    try:
        transport = MqttTransport(app.service, app.config.mqtt)  # never started: no connection
        notice = hub_pb2.ModelUpdate(bundle_name="net", version="1.0.2")
        transport.client.max_queued_messages_set(1)
        with pytest.raises(AnnounceError, match="net 1.0.2 to 'cam-2' over MQTT"):
            transport.announce(notice, ["cam-1", "cam-2"])  # cam-1's is queued, cam-2's does not fit
        assert len(transport.client._out_messages) == 1  # paho holds cam-1's notice for the reconnect
    finally:
        app.stop()


def test_a_wildcard_host_names_no_fetch_address_unless_one_is_advertised(tmp_path: Path) -> None:
    """grpc://0.0.0.0:port would send every device to itself: notices then carry none, and devices fetch from the
    hub URL they use; an advertise_url is named as given."""
    named = "grpc://hub.example:1"
    for grpc_section, expected in (({"host": "0.0.0.0"}, ""), ({"host": "0.0.0.0", "advertise_url": named}, named)):
        app = HubApp(hub_config(tmp_path / str(len(expected)), grpc={**grpc_section, "port": free_port()})).start()
        try:
            assert app.publisher().fetch_uri() == expected
        finally:
            app.stop()


class RefusingTransport(LoopbackTransport):
    """Refuses to announce the first bundle it is given, as MQTT does when paho's queue is full."""

    name = "refusing"

    def announce(self, notice: hub_pb2.ModelUpdate, device_ids: Sequence[str]) -> None:
        EVENTS.append(f"announce {notice.bundle_name}")
        if len(EVENTS) == 1:
            raise AnnounceError(f"{notice.bundle_name} to {device_ids[0]!r}: queue full")


def test_one_notice_a_transport_cannot_send_stops_no_other_targets_publishing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A retrain for two targets: the first target's notice is refused, the second is still recorded and announced,
    and the run is published (the first is recorded too: its devices find it when they look)."""
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
    from hgen.hub.retrain import pipeline as pipeline_module
    from hgen.hub.retrain.publish import BuiltBundle

    EVENTS.clear()
    built = []
    for target, device in (("rpi4", "pi-1"), ("x86_64", "pc-1")):
        archive = tmp_path / f"net-{target}.hgb"
        archive.write_bytes(target.encode())
        built.append(BuiltBundle(target, f"net-{target}", tmp_path, archive, b"", (device,)))
    monkeypatch.setattr(pipeline_module, "build_bundles", lambda *args, **kwargs: built)
    monkeypatch.setattr("hgen.compiler.lowering.tflite.calibration_images", lambda split: None)
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    store = RetrainStore(kb)
    config = parse_hub_config({"retrain": {"store_dir": str(tmp_path / "store"),
                                           "signing_key": str(tmp_path / "unused.key")}}).retrain
    pipeline = RetrainPipeline(config, store, HubPublisher(kb, [RefusingTransport(None, None)]))  # type: ignore
    monkeypatch.setattr(pipeline, "base_target", lambda name: "rpi4")  # no configured bundle to read it from
    prepared = SimpleNamespace(current=SimpleNamespace(version="1.0.0"), data=SimpleNamespace(train=None),
                               manifest=SimpleNamespace(target="rpi4", tau=0.5))
    run = store.create_run("net", "api", "1.0.0")  # running: the version is recorded with it, as published
    store.start_run(run.id)
    model = SimpleNamespace(save=lambda path: Path(path).write_bytes(b"keras"))
    try:
        version = pipeline._publish(SimpleNamespace(name="net", devices={}), prepared, model, 1.0, run, {})
        assert version == "1.0.1" and EVENTS == ["announce net-rpi4", "announce net-x86_64"]
        assert store.run(run.id).status == "published"  # before the announcements, in the version's transaction
        assert kb.bundle("net-rpi4", "1.0.1") is not None and kb.bundle("net-x86_64", "1.0.1") is not None
        assert any("was not told" in r.getMessage() and "queue full" in r.getMessage() for r in caplog.records)
    finally:
        kb.close()
