"""The agent's hub link over TLS, with real servers: the hub's gRPC service serving mutual TLS (grpcs://) and a
Mosquitto TLS listener (mqtts://) that requires client certificates. The CA and certificates are made at test time
(hgen.hub.testing.tls); the model is the `null` engine, so no ML package is loaded. The simulated crowd
(simulated people, labelled so) answers through the hub's annotator API.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import AgentConfig, parse_agent_config
from hgen.edge_agent.testing import (
    ResultCollector,
    RunningHub,
    start_hub,
    wait_agent,
    write_video,
)
from hgen.edge_agent.transports import TransportErrorCode
from hgen.hub.testing.services import Broker, BrokerTls, ServiceUnavailableError, mosquitto
from hgen.hub.testing.tls import PkiFiles, make_pki
from hgen.hub.transports.grpc_server import GrpcTransport

if TYPE_CHECKING:
    from hgen.edge_agent.testing import TestKeys  # not imported at run time: pytest would try to collect it

DEVICE = "cam-1"
FRAMES = 40


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "noise.avi", FRAMES)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PkiFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(pki: PkiFiles) -> Iterator[Broker]:
    """Mosquitto with only a TLS listener that requires a client certificate signed by the test CA."""
    try:
        with mosquitto(tls=BrokerTls(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)) as b:
            yield b
    except ServiceUnavailableError as exc:
        pytest.skip(f"MQTT tests skipped: {exc}")


@pytest.fixture
def hubs() -> Iterator[list[RunningHub]]:
    started: list[RunningHub] = []
    yield started
    for hub in started:
        hub.stop()


def agent_config(tmp: Path, bundle: Path, keys: TestKeys, video: Path, url: str, tls: dict[str, str],
                 patience_s: float = 60.0, secret: str | None = None) -> AgentConfig:
    """Every frame goes to people (tau 1), so each one needs the hub link to be fused."""
    return parse_agent_config({
        "device_id": DEVICE,
        "bundle": {"path": str(bundle), "public_key": str(keys.public_pem), "store_dir": str(tmp / "store")},
        "source": {"kind": "video", "uri": str(video)},
        "gate": {"tau": 1.0, "audit_share": 0.0},
        "batching": {"size": 8, "max_wait_s": 0.2, "patience_s": patience_s},
        "hub": {"url": url, "tls": tls, "resend_after_s": 2.0, "secret": secret},
        "outbox": {"path": str(tmp / "outbox.sqlite")},
        "telemetry": {"status_interval_s": 0.5},
    })


def client_tls(pki: PkiFiles, ca: Path | None = None) -> dict[str, str]:
    return {"ca_file": str(ca or pki.ca_cert), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}


def run_until_fused(config: AgentConfig, hub: RunningHub) -> tuple[ResultCollector, dict[str, float]]:
    collector = ResultCollector()
    with Agent(config, callbacks=[collector]) as agent:
        assert agent.wait(30)
        assert agent.wait_settled(30) and agent.wait_outbox_empty(30)
        snap = agent.telemetry.snapshot()
        assert "hub" not in agent.telemetry.problems
    pending = Counter(r.sample_id for r in collector.with_status("pending"))
    fused = Counter(r.sample_id for r in collector.with_status("fused"))
    assert len(pending) == FRAMES and set(fused) == set(pending) and max(fused.values()) == 1
    assert hub.sample_ids() == set(pending)
    return collector, snap


def test_grpcs_mutual_tls_samples_fused(tmp_path, bundle, keys, video, pki, hubs) -> None:
    """No secret in the agent's config: its client certificate's name (cam-1, an enrolled device) proves it."""
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "client_ca_file": str(pki.ca_cert)}
    hub = start_hub(tmp_path / "hub.db", [DEVICE], overrides={"grpc": {"tls": tls}})
    hubs.append(hub)
    assert hub.grpc_url.startswith("grpcs://127.0.0.1:")
    assert hub.app.transport(GrpcTransport).fetch_uri == hub.grpc_url  # update notices point devices at the TLS port
    _, snap = run_until_fused(agent_config(tmp_path, bundle, keys, video, hub.grpc_url, client_tls(pki)), hub)
    assert snap["fused"] == FRAMES and snap["timeouts"] == 0


def test_grpcs_wrong_ca_is_a_tls_problem_and_model_answers_stand(tmp_path, bundle, keys, video, pki,
                                                                 hubs) -> None:
    """The agent trusts another CA: the handshake fails, status names TLS, and every frame still gets the
    model's answer (pending, then timeout after patience); nothing reaches the hub."""
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    hub = start_hub(tmp_path / "hub.db", [DEVICE], overrides={"grpc": {"tls": tls}})
    hubs.append(hub)
    stranger = make_pki(tmp_path / "other-ca")
    config = agent_config(tmp_path, bundle, keys, video, hub.grpc_url, {"ca_file": str(stranger.ca_cert)},
                          patience_s=0.5)
    collector = ResultCollector()
    with Agent(config, callbacks=[collector]) as agent:
        tls_failed = lambda: agent.telemetry.problems.get("hub", "").startswith(TransportErrorCode.TLS.value)  # noqa: E731
        assert wait_agent(agent, tls_failed, 30), agent.telemetry.problems
        assert agent.wait(30) and agent.wait_settled(30)
        assert tls_failed(), agent.telemetry.problems  # reconnect attempts keep the cause
        assert "CERTIFICATE_VERIFY_FAILED" in agent.telemetry.problems["hub"]
        status = agent.telemetry.device_status(DEVICE, agent.model.name, agent.model.version)
        assert status.metrics["problem.hub"] == 1.0
        assert agent.outbox.depth() == FRAMES  # kept for when the link works
    first = [r for r in collector.results if r.status.value in ("model", "pending")]
    assert sorted(r.frame_index for r in first) == list(range(FRAMES))
    timeouts = collector.with_status("timeout")
    assert {r.sample_id for r in timeouts} == {r.sample_id for r in first}
    assert all(r.label == r.model_label and r.label is not None for r in timeouts)
    assert hub.sample_ids() == set()


def test_mqtts_with_client_certificates_samples_fused(tmp_path, bundle, keys, video, pki, tls_broker,
                                                       hubs) -> None:
    """Mosquitto serves only TLS and requires client certificates; hub and agent both connect via mqtts://."""
    assert tls_broker.url.startswith("mqtts://")
    hub = start_hub(tmp_path / "hub.db", [DEVICE], broker=tls_broker, overrides={"mqtt": {"tls": client_tls(pki)}})
    hubs.append(hub)
    _, snap = run_until_fused(agent_config(tmp_path, bundle, keys, video, tls_broker.url, client_tls(pki),
                                           secret=hub.secret(DEVICE)), hub)
    assert snap["fused"] == FRAMES


def test_hub_tls_config_is_strict() -> None:
    from hgen.hub.config import parse_hub_config
    from hgen.hub.errors import HubConfigError

    with pytest.raises(HubConfigError) as info:
        parse_hub_config({"grpc": {"tls": {"cert_file": "s.pem", "keyfile": "s.key"}},
                          "mqtt": {"tls": {"cert_file": "c.pem"}}})
    text = str(info.value)
    assert "grpc.tls.keyfile" in text and "grpc.tls.key_file" in text and "cert_file and key_file" in text
