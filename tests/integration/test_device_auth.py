"""Issue 15: devices prove who they are. A real Mosquitto whose password file and ACL the hub writes, and real
gRPC: anonymous clients are refused, device B can neither speak nor listen for device A, a revoked device is
refused (within seconds on the broker, on its next gRPC call) while A keeps flowing with nothing lost."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from hgen.edge_agent.testing import RunningHub, start_hub
from hgen.hub.cli import main as hub_cli
from hgen.hub.devices import DeviceCredentialError
from hgen.hub.kb.models import Sample
from hgen.hub.testing.attacker import NOT_AUTHORIZED, MqttProbe
from hgen.hub.testing.device import MqttDevice, ReplyLog
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import Broker
from hgen.hub.testing.tls import make_pki
from hgen.protos import hub_pb2, hub_pb2_grpc
from hgen.protos.mqtt import QOS, topic
from hgen.hub.transports.mqtt import MqttTransport

A, B = "cam-a", "cam-b"


@pytest.fixture
def hub(tmp_path: Path, broker: Broker) -> Iterator[RunningHub]:  # noqa: F811
    running = start_hub(tmp_path / "hub.db", [A, B], broker=broker, m=1)
    yield running
    running.stop()


def stored(hub: RunningHub, sample_id: str) -> bool:
    with hub.app.service.kb.session() as s:
        return s.get(Sample, sample_id) is not None


def request_bytes(device: str, n: int = 1) -> tuple[hub_pb2.AnnotationRequest, bytes]:
    request = make_request(device, [make_sample(device) for _ in range(n)], m=1)
    return request, request.SerializeToString()


def test_anonymous_and_wrong_password_clients_are_refused(hub: RunningHub, broker: Broker) -> None:  # noqa: F811
    for username, password in ((None, None), (A, "not-the-secret"), ("nobody", "x")):
        client = MqttProbe(broker.host, broker.port, username, password, f"probe-{username}")
        try:
            assert not client.accepted and client.connack[0] == NOT_AUTHORIZED
        finally:
            client.close()


def test_b_cannot_publish_as_a_read_a_or_plant_a_retained_update(hub: RunningHub, broker: Broker) -> None:  # noqa: F811
    log_a = ReplyLog()
    device_a = MqttDevice(broker.host, broker.port, A, log_a, password=hub.secret(A))
    b = MqttProbe(broker.host, broker.port, B, hub.secret(B), "attacker-b")
    try:
        assert b.accepted
        b.subscribe("#", topic("hgen/v1", A, "replies"), topic("hgen/v1", A, "samples"))
        forged, payload = request_bytes(A)
        assert b.publish(topic("hgen/v1", A, "samples"), payload) == NOT_AUTHORIZED
        assert b.publish(topic("hgen/v1", B, "samples"), payload) == 0  # the broker lets B use its topic ...
        assert b.publish(topic("hgen/v1", A, "updates"), b"planted", retain=True) == NOT_AUTHORIZED
        genuine = [make_request(A, [make_sample(A) for _ in range(5)], m=1) for _ in range(2)]
        device_a.submit(genuine)
        assert log_a.wait_for(10, timeout=60), f"A got {log_a.count()} of 10 replies"
        late = MqttProbe(broker.host, broker.port, A, hub.secret(A), "late-a")
        try:
            late.subscribe(topic("hgen/v1", A, "updates"))
            # the broker queues a retained message at the subscribe, before anything published after the SUBACK:
            # once the hub's marker is in, a planted update would have arrived ahead of it
            hub.app.transport(MqttTransport).client.publish(topic("hgen/v1", A, "updates"), b"after-subscribe", QOS)
            assert late.wait(lambda: late.messages, 30), "the marker published after the subscribe never came"
            assert [m.payload for m in late.messages] == [b"after-subscribe"], "B's planted update reached A"
        finally:
            late.close()
    finally:
        device_a.close()
        b.close()
    assert not b.messages, f"B read {[m.topic for m in b.messages]}"
    assert not any(stored(hub, s.sample_id) for s in forged.samples)  # ... but the hub refuses a foreign id on it
    assert hub.app.service.metrics.get("device_impersonation") >= 1
    assert log_a.duplicated() == 0


def test_revoked_device_is_refused_while_others_keep_flowing(hub: RunningHub, broker: Broker) -> None:  # noqa: F811
    log_a, log_b = ReplyLog(), ReplyLog()
    device_a = MqttDevice(broker.host, broker.port, A, log_a, password=hub.secret(A))
    device_b = MqttDevice(broker.host, broker.port, B, log_b, password=hub.secret(B))
    registry = hub.app.transport(MqttTransport).devices
    try:
        device_b.submit([make_request(B, [make_sample(B) for _ in range(3)], m=1)])
        assert log_b.wait_for(3, timeout=60)
        batches = [make_request(A, [make_sample(A) for _ in range(5)], m=1) for _ in range(4)]
        device_a.submit(batches[:2])
        drops: list[str] = []  # nobody but B may be disconnected by the revocation
        device_a.client.on_disconnect = lambda *_: drops.append(A)
        hub_client = hub.app.transport(MqttTransport).client
        hub_disconnect = hub_client.on_disconnect
        hub_client.on_disconnect = lambda *args: (drops.append("hub"), hub_disconnect(*args))
        registry.revoke(B)  # returns once the broker has loaded the new files
        device_a.submit(batches[2:])
        late, _ = request_bytes(B)
        device_b.publish(late.SerializeToString())
        again = MqttProbe(broker.host, broker.port, B, hub.secret(B), "b-again")
        assert again.connack[0] == NOT_AUTHORIZED
        again.close()
        assert log_a.wait_for(20, timeout=90), f"A got {log_a.count()} of 20 replies"
        assert drops == [], drops
    finally:
        device_a.close()
        device_b.close()
    assert log_a.duplicated() == 0 and not log_a.missing(s.sample_id for r in batches for s in r.samples)
    assert not any(stored(hub, s.sample_id) for s in late.samples)
    with pytest.raises(DeviceCredentialError):
        registry.rotate(B)  # revoked: only add-device enrols it again


def grpc_call(hub: RunningHub, token: str | None, device: str) -> grpc.StatusCode:
    channel = grpc.insecure_channel(hub.grpc_url.removeprefix("grpc://"))
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        hub_pb2_grpc.AnnotationHubStub(channel).ReportStatus(hub_pb2.DeviceStatus(device_id=device, online=True),
                                                               timeout=10, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined]
    finally:
        channel.close()


def test_grpc_binds_the_credential_to_the_device_id(hub: RunningHub) -> None:
    token_a = f"{A}:{hub.secret(A)}"
    assert grpc_call(hub, token_a, A) == grpc.StatusCode.OK
    assert grpc_call(hub, token_a, B) == grpc.StatusCode.PERMISSION_DENIED  # A's credential, B's id
    assert grpc_call(hub, None, A) == grpc.StatusCode.PERMISSION_DENIED  # anonymous
    assert grpc_call(hub, f"{A}:guess", A) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_call(hub, f"{B}:{hub.secret(A)}", B) == grpc.StatusCode.PERMISSION_DENIED
    registry = hub.app.transport(MqttTransport).devices
    rotated = registry.rotate(A)
    assert grpc_call(hub, token_a, A) == grpc.StatusCode.PERMISSION_DENIED  # the very next call
    assert grpc_call(hub, rotated.bearer, A) == grpc.StatusCode.OK
    registry.revoke(A)
    assert grpc_call(hub, rotated.bearer, A) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_call(hub, f"{B}:{hub.secret(B)}", B) == grpc.StatusCode.OK  # others unaffected
    metrics = hub.app.service.metrics
    assert metrics.get("device_impersonation") >= 1 and metrics.get("device_auth_refused") >= 4


def test_mutual_tls_certificate_issued_by_add_device_proves_only_its_device(tmp_path: Path) -> None:
    """`add-device --certificate-dir`: a client certificate named by the device id; it speaks for that device
    only, and revoking the device refuses the certificate too (no CRL needed)."""
    pki = make_pki(tmp_path / "pki")
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "client_ca_file": str(pki.ca_cert),
           "client_ca_key_file": str(pki.ca_key)}
    hub = start_hub(tmp_path / "hub.db", [A], overrides={"grpc": {"tls": tls}})
    try:
        config = tmp_path / "hub.yaml"
        config.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                          "grpc": {"tls": tls}}))
        assert hub_cli(["add-device", B, "--certificate-dir", str(tmp_path / "certs"), "--config", str(config)]) == 0
        cert, key = tmp_path / "certs" / f"{B}.pem", tmp_path / "certs" / f"{B}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())

        def status_as(device: str) -> grpc.StatusCode:
            channel = grpc.secure_channel(hub.grpc_url.removeprefix("grpcs://"), credentials)
            try:
                hub_pb2_grpc.AnnotationHubStub(channel).ReportStatus(hub_pb2.DeviceStatus(device_id=device), timeout=10)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[attr-defined]
            finally:
                channel.close()

        assert status_as(B) == grpc.StatusCode.OK
        assert status_as(A) == grpc.StatusCode.PERMISSION_DENIED
        assert hub_cli(["revoke-device", B, "--config", str(config)]) == 0
        assert status_as(B) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        hub.stop()
