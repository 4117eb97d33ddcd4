"""Security benchmark (issue 15): what an attacker on the devices' network tries, against a hub with device
authentication on (a real Mosquitto whose accounts and ACL the hub writes, real gRPC), and what happened.

The attacker holds device B's credentials (or none, or a revoked / guessed one) and targets device A. Each
attack is one row: `accepted` is true when the attacker got what it wanted (a connection, a message taken by the
broker or the hub, a message read, a bundle served). Controls show the same paths work for their owners.
Writes tools/bench/results/security.json (`{"attempts": N, "accepted": 0, ...}` at the top) and .md.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from hgen.edge_agent.testing import RunningHub, start_hub
from hgen.hub.kb.models import Sample
from hgen.hub.testing.attacker import MqttProbe
from hgen.hub.testing.device import MqttDevice, ReplyLog
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import Broker, mosquitto, mosquitto_binary
from hgen.protos import hub_pb2, hub_pb2_grpc
from hgen.protos.mqtt import topic
from hgen.hub.transports.mqtt import MqttTransport

RESULTS = Path(__file__).parent / "results"
A, B, C = "cam-a", "cam-b", "cam-c"
PREFIX = "hgen/v1"


class Bench:
    """The hub, the broker and the rows; `attack` records one attempt, `control` one legitimate action."""

    def __init__(self, hub: RunningHub, broker: Broker) -> None:
        self.hub, self.broker = hub, broker
        self.rows: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []
        self.devices = hub.app.transport(MqttTransport).devices
        self.bearer = {d: f"{d}:{s}" for d, s in hub.secrets.items()}

    def attack(self, name: str, transport: str, outcome: str, accepted: bool) -> None:
        self.rows.append({"attack": name, "transport": transport, "outcome": outcome, "accepted": accepted})

    def control(self, name: str, ok: bool) -> None:
        self.controls.append({"action": name, "worked": ok})

    def probe(self, username: str | None, password: str | None, client_id: str) -> MqttProbe:
        return MqttProbe(self.broker.host, self.broker.port, username, password, client_id)

    def stored(self, request: hub_pb2.AnnotationRequest) -> bool:
        with self.hub.app.service.kb.session() as s:
            return any(s.get(Sample, x.sample_id) is not None for x in request.samples)

    def grpc(self, call: Callable[[hub_pb2_grpc.AnnotationHubStub, tuple], Any], token: str | None) -> str:
        """The status code name of one call (OK when it went through)."""
        channel = grpc.insecure_channel(self.hub.grpc_url.removeprefix("grpc://"))
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            call(hub_pb2_grpc.AnnotationHubStub(channel), metadata)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name  # type: ignore[attr-defined]
        finally:
            channel.close()


def request_of(device: str) -> hub_pb2.AnnotationRequest:
    return make_request(device, [make_sample(device)], m=1)


def connect_attacks(bench: Bench) -> None:
    for name, user, password in (("anonymous connect", None, None),
                                 ("connect as A with a guessed password", A, "guess-" + "x" * 20),
                                 ("connect as an unknown account", "intruder", "x")):
        probe = bench.probe(user, password, f"attacker-{len(bench.rows)}")
        bench.attack(name, "mqtt", f"CONNACK reason {probe.connack[0]}", probe.accepted)
        probe.close()
    submit = lambda stub, md: list(stub.Submit(request_of(A), timeout=10, metadata=md))  # noqa: E731
    code = bench.grpc(submit, None)
    bench.attack("Submit without a credential", "grpc", code, code == "OK")
    code = bench.grpc(submit, f"{A}:guessed-secret")
    bench.attack("Submit as A with a guessed secret", "grpc", code, code == "OK")


def mqtt_impersonation_and_eavesdropping(bench: Bench) -> None:
    """B's account against A: publish as A, read A's traffic, forge hub messages, plant a retained update."""
    secret_b = bench.hub.secret(B)
    everything, targeted = bench.probe(B, secret_b, "b-hash"), bench.probe(B, secret_b, "b-replies")
    everything.subscribe("#")
    targeted.subscribe(topic(PREFIX, A, "replies"), topic(PREFIX, A, "updates"), topic(PREFIX, A, "samples"))
    attacker = bench.probe(B, secret_b, "b-publisher")
    forged = request_of(A)
    code = attacker.publish(topic(PREFIX, A, "samples"), forged.SerializeToString())
    bench.attack("publish a sample on A's topic", "mqtt", f"PUBACK reason {code}", code == 0 or bench.stored(forged))
    own_topic = request_of(A)
    code = attacker.publish(topic(PREFIX, B, "samples"), own_topic.SerializeToString())
    refused = bench.hub.app.service.metrics.get("device_impersonation")
    bench.attack("publish A's device id on B's own topic", "mqtt",
                 f"PUBACK reason {code}; hub refused it (device_impersonation={refused})", bench.stored(own_topic))
    reply = hub_pb2.SampleReply(sample_id=forged.samples[0].sample_id, device_id=A, reply_id="forged")
    code = attacker.publish(topic(PREFIX, A, "replies"), reply.SerializeToString())
    bench.attack("forge a reply to A (only the hub may)", "mqtt", f"PUBACK reason {code}", code == 0)
    code = attacker.publish(topic(PREFIX, A, "updates"), b"planted", retain=True)
    bench.attack("plant a retained update for A", "mqtt", f"PUBACK reason {code}", code == 0)
    genuine = genuine_traffic_of_a(bench)
    for probe, name in ((everything, "eavesdrop: subscribe to #"),
                        (targeted, "eavesdrop: subscribe to A's replies, updates and samples")):
        probe.wait(lambda: False, 0.5)
        heard = sorted({m.topic for m in probe.messages})
        bench.attack(name, "mqtt", f"{len(probe.messages)} messages read {heard}", bool(probe.messages))
    late = bench.probe(A, bench.hub.secret(A), "a-late")
    late.subscribe(topic(PREFIX, A, "updates"))
    late.wait(lambda: late.messages, 2.0)
    planted = [m for m in late.messages if m.payload == b"planted"]
    bench.control("A sees the hub's retained update (and no planted one)", bool(late.messages) and not planted)
    bench.control("A's own samples are answered while B attacks", genuine)
    for probe in (everything, targeted, attacker, late):
        probe.close()


def genuine_traffic_of_a(bench: Bench) -> bool:
    """A sends samples and gets replies, and the hub publishes A an update: traffic worth eavesdropping on."""
    log = ReplyLog()
    device = MqttDevice(bench.broker.host, bench.broker.port, A, log, password=bench.hub.secret(A))
    try:
        requests = [request_of(A) for _ in range(3)]
        device.submit(requests)
        answered = log.wait_for(3, timeout=60)
        bench.hub.publish_bundle(fake_bundle(Path(tempfile.mkdtemp()), "x86_64"), "net", "1.0.0", [A])
    finally:
        device.close()
    return answered


def grpc_impersonation(bench: Bench) -> None:
    token_a = bench.bearer[A]
    code = bench.grpc(lambda stub, md: list(stub.Submit(request_of(B), timeout=10, metadata=md)), token_a)
    bench.attack("Submit with A's credential and device id B", "grpc", code, code == "OK")
    code = bench.grpc(lambda stub, md: stub.ReportStatus(hub_pb2.DeviceStatus(device_id=B), timeout=10, metadata=md),
                      token_a)
    bench.attack("ReportStatus as B with A's credential", "grpc", code, code == "OK")
    watch = hub_pb2.WatchUpdatesRequest(device_id=B, bundle_name="net")
    code = bench.grpc(lambda stub, md: next(iter(stub.WatchUpdates(watch, timeout=5, metadata=md))), token_a)
    bench.attack("WatchUpdates for B with A's credential", "grpc", code, code == "OK")
    captured = request_of(A).SerializeToString()  # what a sniffer on A's link would have
    replay = hub_pb2.AnnotationRequest.FromString(captured)
    code = bench.grpc(lambda stub, md: list(stub.Submit(replay, timeout=10, metadata=md)), bench.bearer[B])
    bench.attack("replay A's captured sample with B's credential", "grpc", code, code == "OK" or bench.stored(replay))
    probe = bench.probe(B, bench.hub.secret(B), "b-replay")
    code = probe.publish(topic(PREFIX, B, "samples"), captured)  # A's topic is refused by the broker outright
    probe.close()
    bench.attack("replay A's captured sample on B's own topic", "mqtt",
                 f"PUBACK reason {code}; hub refused it (device id is not the account)", bench.stored(replay))


def wrong_target(bench: Bench) -> None:
    """C runs x86_64: a bundle built for rpi4 is refused to it, its own target's bundle is served."""
    folder = Path(tempfile.mkdtemp())
    token = bench.devices.add(C, "x86_64").bearer
    bench.hub.publish_bundle(fake_bundle(folder, "rpi4"), "net-rpi4", "1.0.0")
    fetch = lambda name: lambda stub, md: list(stub.FetchBundle(  # noqa: E731
        hub_pb2.BundleRequest(bundle_name=name, version="1.0.0"), timeout=10, metadata=md))
    code = bench.grpc(fetch("net-rpi4"), token)
    bench.attack("fetch a bundle built for another target", "grpc", code, code == "OK")
    bench.control("C fetches its own target's bundle", bench.grpc(fetch("net"), token) == "OK")


def revocation(bench: Bench) -> None:
    started = time.monotonic()
    bench.devices.revoke(B)  # returns once the broker enforces the new files
    took = time.monotonic() - started
    probe = bench.probe(B, bench.hub.secret(B), "b-revoked")
    bench.attack("revoked device connects", "mqtt", f"CONNACK reason {probe.connack[0]} (revoked in {took:.2f}s)",
                 probe.accepted)
    probe.close()
    code = bench.grpc(lambda stub, md: stub.ReportStatus(hub_pb2.DeviceStatus(device_id=B), timeout=10, metadata=md),
                      bench.bearer[B])
    bench.attack("revoked device's next gRPC call", "grpc", code, code == "OK")
    log = ReplyLog()
    device = MqttDevice(bench.broker.host, bench.broker.port, A, log, password=bench.hub.secret(A))
    try:
        device.submit([request_of(A)])
        bench.control("A keeps flowing after B's revocation", log.wait_for(1, timeout=60))
    finally:
        device.close()


def fake_bundle(folder: Path, target: str) -> Path:
    """A bundle archive whose manifest names `target` (the hub reads only that to decide who may fetch it)."""
    path = folder / f"bundle-{target}.hgb"
    data = json.dumps({"target": target}).encode()
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


def run(workdir: Path) -> dict[str, Any]:
    with mosquitto(workdir) as broker:
        hub = start_hub(workdir / "hub.db", [A, B], broker=broker, m=1)
        try:
            bench = Bench(hub, broker)
            connect_attacks(bench)
            mqtt_impersonation_and_eavesdropping(bench)
            grpc_impersonation(bench)
            wrong_target(bench)
            revocation(bench)
            counters = {k: v for k, v in hub.app.service.metrics.snapshot().items() if k.startswith("device_")}
        finally:
            hub.stop()
    version = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"attempts": len(bench.rows), "accepted": sum(r["accepted"] for r in bench.rows), "attacks": bench.rows,
            "controls": bench.controls, "hub_counters": counters,
            "how": f"{version}, hub-written password file and ACL, allow_anonymous false; gRPC on loopback; "
                   f"Python {platform.python_version()} on {platform.machine()}"}


def to_markdown(result: dict[str, Any]) -> str:
    lines = ["# Security: attacks tried against device authentication (issue 15)", "",
             f"**{result['attempts']} attempts, {result['accepted']} accepted.** {result['how']}.", "",
             "| Attack | Transport | Outcome | Accepted |", "|---|---|---|---|"]
    lines += [f"| {r['attack']} | {r['transport']} | {r['outcome']} | {'YES' if r['accepted'] else 'no'} |"
              for r in result["attacks"]]
    lines += ["", "Controls (the same paths for their rightful owners):", "", "| Action | Worked |", "|---|---|"]
    lines += [f"| {c['action']} | {'yes' if c['worked'] else 'NO'} |" for c in result["controls"]]
    lines += ["", f"Hub counters: {json.dumps(result['hub_counters'], sort_keys=True)}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hgen-security-") as tmp:
        result = run(Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "security.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "security.md").write_text(to_markdown(result))
    print(to_markdown(result))
    if result["accepted"] or not all(c["worked"] for c in result["controls"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
