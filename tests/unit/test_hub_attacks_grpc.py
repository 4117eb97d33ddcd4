"""Attacks on the hub's gRPC port, over real gRPC on loopback: guessed secrets must not cost the hub slow hashes
or a log line each (F5), and one enrolled device must not be able to hold the server's threads (F6)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import HubConfigError
from hgen.hub.kb.store import BundleRecord, bundle_notice
from hgen.hub.testing.device import enroll
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.transports.grpc_server import GrpcTransport, watch_slots
from hgen.protos import hub_pb2, hub_pb2_grpc

A, B = "cam-a", "cam-b"
CALL_TIMEOUT_S = 10.0  # a generous bound for a call that must be served; the old hub never served it


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[HubApp, dict[str, Any]]]:
    app = HubApp(parse_hub_config({"devices": [A, B], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "grpc": {"port": 0}})).start()
    try:
        yield app, enroll(app, A, B)
    finally:
        app.stop()


@pytest.fixture
def channel(hub: tuple[HubApp, dict[str, Any]]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{hub[0].transport(GrpcTransport).port}") as opened:
        yield opened


def as_device(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def status_code(stub: hub_pb2_grpc.AnnotationHubStub, device: str, token: str) -> grpc.StatusCode:
    try:
        stub.ReportStatus(hub_pb2.DeviceStatus(device_id=device), metadata=as_device(token), timeout=CALL_TIMEOUT_S)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined]


def record_bundle(app: HubApp, version: str, published_at: float) -> None:
    """A bundle named `m` that no device has a target for: every watcher of `m` is told of it."""
    record = BundleRecord("m", version, "ab" * 32, 12, b"", "/nowhere/m.hgb", published_at)
    app.service.kb.add_bundle(record)
    app.transport(GrpcTransport).announce(bundle_notice(record), [A, B])


def test_guessed_secrets_cost_no_slow_hash_and_are_logged_once(hub, channel, monkeypatch, caplog) -> None:
    """Each refused guess for a known id ran 100,000 PBKDF2 rounds and logged a warning, without bound."""
    app, creds = hub
    stub = hub_pb2_grpc.AnnotationHubStub(channel)
    pbkdf2: list[str] = []
    real = hashlib.pbkdf2_hmac
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda name, *a, **k: pbkdf2.append(name) or real(name, *a, **k))
    caplog.set_level(logging.WARNING, logger="hgen.hub.transports.grpc_auth")
    for guess in range(20):
        assert status_code(stub, A, f"{A}:guess-{guess}") == grpc.StatusCode.PERMISSION_DENIED
    assert status_code(stub, A, creds[A].bearer) == grpc.StatusCode.OK
    assert pbkdf2 == []
    assert app.service.metrics.get("device_auth_refused") == 20
    refusals = [r for r in caplog.records if "device_auth_refused" in r.getMessage()]
    assert len(refusals) == 1 and A in refusals[0].getMessage()


def test_a_device_opening_many_watch_streams_leaves_the_others_served(hub, channel) -> None:
    """Each WatchUpdates stream held a thread forever: B's 16 streams left A's calls waiting. Now a device's
    newest stream replaces its older ones, which end, and the newest still hears of new bundles."""
    app, creds = hub
    stub = hub_pb2_grpc.AnnotationHubStub(channel)
    record_bundle(app, "1.0.0", 1.0)
    request = hub_pb2.WatchUpdatesRequest(device_id=B, bundle_name="m")
    watches = []
    for _ in range(app.config.grpc.max_workers):
        call = stub.WatchUpdates(request, metadata=as_device(creds[B].bearer), timeout=60)
        assert next(call).version == "1.0.0"  # its handler runs on a server thread
        watches.append(call)
    try:
        assert status_code(stub, A, creds[A].bearer) == grpc.StatusCode.OK
        for older in watches[:-1]:
            with pytest.raises(grpc.RpcError) as ended:
                next(older)
            assert ended.value.code() == grpc.StatusCode.ABORTED and "replaced" in ended.value.details()
        record_bundle(app, "1.0.1", 2.0)
        assert next(watches[-1]).version == "1.0.1"
        assert app.service.metrics.get("grpc_watch_replaced") == len(watches) - 1
    finally:
        for call in watches:
            call.cancel()


def open_submit(stub: hub_pb2_grpc.AnnotationHubStub, token: str, device: str) -> Any:
    """A Submit stream the hub keeps open: a sample waiting for people (600 s deadline), and a malformed one whose
    immediate rejection, read here, shows the stream's handler is running."""
    bad = make_sample(device, sample_id="not-a-uuid")
    call = stub.Submit(make_request(device, [make_sample(device), bad], m=1), metadata=as_device(token), timeout=60)
    assert next(call).sample_id == "not-a-uuid"
    return call


def test_a_device_over_its_submit_stream_cap_is_refused_and_others_served(hub, channel) -> None:
    """Submit streams stay open until their replies; one device may hold `max_submit_streams_per_device`."""
    app, creds = hub
    stub = hub_pb2_grpc.AnnotationHubStub(channel)
    cap = app.config.grpc.max_submit_streams_per_device
    for _ in range(cap + 1):  # streams that end give their slot back
        done = stub.Submit(make_request(B, [make_sample(B, sample_id="not-a-uuid")], m=1),
                           metadata=as_device(creds[B].bearer), timeout=CALL_TIMEOUT_S)
        assert [r.sample_id for r in done] == ["not-a-uuid"]
    held = [open_submit(stub, creds[B].bearer, B) for _ in range(cap)]
    try:
        with pytest.raises(grpc.RpcError) as refused:
            open_submit(stub, creds[B].bearer, B)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_submit_streams_per_device" in refused.value.details()
        assert app.service.metrics.get("grpc_submit_streams_capped") == 1
        held.append(open_submit(stub, creds[A].bearer, A))  # another device's stream: served
        assert status_code(stub, A, creds[A].bearer) == grpc.StatusCode.OK
    finally:
        for call in held:
            call.cancel()


def test_the_pool_must_leave_room_beside_one_device_at_its_caps(tmp_path: Path) -> None:
    """The smallest pool valid before the per-device call cap (11: 1 watch + 4 Submit + 2 FetchBundle + 4 free)
    stays valid with the defaults, and the default pool keeps its 6 WatchUpdates slots (3 with a cap of 10: an
    upgraded hub refused to start at 11-13, and half its watchers had to poll)."""
    grpc_config = parse_hub_config({"grpc": {"max_workers": 11}}).grpc  # max_calls_per_device + 4
    assert grpc_config.max_calls_per_device == 7
    with pytest.raises(HubConfigError, match="max_workers 10 is too small"):
        parse_hub_config({"grpc": {"max_workers": 10}})
    assert watch_slots(parse_hub_config({}).grpc) == 6
    # a per-kind cap above the device's cap on all its calls would never be reached
    with pytest.raises(HubConfigError, match="max_submit_streams_per_device 8 exceeds max_calls_per_device 7"):
        parse_hub_config({"grpc": {"max_calls_per_device": 7, "max_submit_streams_per_device": 8}})
