"""Hub load benchmark: sustained samples/s through gRPC and MQTT on loopback, reply latency p50/p99, RSS.

The simulated crowd answers at once (its latency is simulated time, recorded in answers, never slept), so the
reply latency measured here is the hub's own overhead: ingest, task assignment, aggregation, reply delivery.
The hub runs in this process (SQLite WAL knowledge base, a private Mosquitto), so RSS is this process's.
Writes tools/bench/results/hub_load.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.testing.crowd import CrowdDriver
from hgen.hub.testing.device import GrpcDevice, MqttDevice, ReplyLog, enroll
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import free_port, mosquitto
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE = "bench-1"
RESULTS = Path(__file__).parent / "results"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_once(transport: str, samples: int, batch: int, m: int, workdir: Path, broker=None) -> dict:
    data = {"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{workdir / f'{transport}.db'}"},
            "grpc": {"enabled": transport == "grpc", "port": free_port()},
            # one device stands for the fleet: what is measured is the hub's throughput, not its per-device limits
            "limits": {"max_open_samples_per_device": 0, "max_image_bytes_per_device_per_hour": 0}}
    if broker is not None:
        data["mqtt"] = broker.hub_mqtt(client_id=f"hub-{workdir.name}")
    app = HubApp(parse_hub_config(data)).start()
    credential = enroll(app, DEVICE)[DEVICE]  # devices authenticate (issue 15)
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(m, 0.9, 10), lambda s: 0).start()
    payload = [make_sample(DEVICE) for _ in range(samples)]
    requests = [make_request(DEVICE, payload[i:i + batch], m=m) for i in range(0, samples, batch)]
    log, sent_at = ReplyLog(), {}
    before = rss_mb()
    start = time.perf_counter()
    for sample in payload:
        sent_at[sample.sample_id] = start
    if transport == "grpc":
        device = GrpcDevice(f"127.0.0.1:{app.transport(GrpcTransport).port}", log, token=credential.bearer)
        with ThreadPoolExecutor(4) as pool:
            for request in requests:
                pool.submit(_timed_grpc, device, request, sent_at)
    else:
        device = MqttDevice(broker.host, broker.port, DEVICE, log, password=credential.secret)
        for request in requests:
            now = time.perf_counter()
            for s in request.samples:
                sent_at[s.sample_id] = now
            device.publish(request.SerializeToString())
    log.wait_for(samples, timeout=600)
    elapsed = time.perf_counter() - start
    after = rss_mb()
    latencies = [(log.first_at[s] - sent_at[s]) * 1000 for s in log.first_at]
    device.close()
    crowd.stop()
    app.stop()
    return {"transport": transport, "samples": samples, "samples_per_s": log.count() / elapsed,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "lost": samples - log.count(), "duplicated": log.duplicated(), "rss_mb_before": before,
            "rss_mb_after": after, "annotators": f"simulated x{m}"}


def _timed_grpc(device: GrpcDevice, request, sent_at: dict) -> None:
    now = time.perf_counter()
    for s in request.samples:
        sent_at[s.sample_id] = now
    device.submit_until_replied(request)


def median_row(rows: list[dict]) -> dict:
    merged = dict(rows[0])
    for key in ("samples_per_s", "p50_ms", "p99_ms", "rss_mb_before", "rss_mb_after"):
        merged[key] = round(statistics.median(r[key] for r in rows), 2)
    merged["lost"] = max(r["lost"] for r in rows)
    merged["duplicated"] = max(r["duplicated"] for r in rows)
    merged["repeats"] = len(rows)
    return merged


def to_markdown(result: dict) -> str:
    lines = ["# Hub load (simulated annotators)", "", result["how"], "",
             "| transport | samples | samples/s | p50 ms | p99 ms | lost | duplicated | RSS MB before | RSS MB after "
             "| annotators |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['transport']} | {r['samples']} | {r['samples_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{r['lost']} | {r['duplicated']} | {r['rss_mb_before']} | {r['rss_mb_after']} | "
                     f"{r['annotators']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--m", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, mosquitto() as broker:
        for transport in ("grpc", "mqtt"):
            runs = []
            for i in range(args.repeats):
                workdir = Path(tmp, f"{transport}{i}")
                workdir.mkdir()
                runs.append(run_once(transport, args.samples, args.batch, args.m, workdir,
                                     broker if transport == "mqtt" else None))
            rows.append(median_row(runs))
    how = (f"Measured on {platform.machine()} {platform.system()} with {os.cpu_count()} CPUs, Python "
           f"{platform.python_version()}; {args.samples} samples per run in batches of {args.batch}, m={args.m} "
           f"simulated annotators answering instantly (simulated human time excluded); SQLite WAL knowledge base; "
           f"private Mosquitto on loopback; hub in the benchmark process (RSS is that process's); median of "
           f"{args.repeats} repeats. Latency = device send -> first reply received.")
    result = {"rows": rows, "how": how, "threads": threading.active_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hub_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "hub_load.md").write_text(to_markdown(result))
    print(how)
    print(to_markdown(result))


if __name__ == "__main__":
    main()
