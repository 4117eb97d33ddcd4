"""Soak benchmark (issue 17): does every escalated sample get answered and fused exactly once under faults?

A real agent (LiteRT LeNet-5 bundle on scikit-learn digits, streamed at 60 fps from an MJPG video through OpenCV,
gate tau 0.9) talks to a real hub run in its own process (hgen.hub.testing.hub_process, so it can be killed with
SIGKILL) over a real Mosquitto (authenticated, persistence and autosave as hub/broker/mosquitto.conf.example)
or gRPC, with SQLite or PostgreSQL. The people are SIMULATED (3 per sample, always right, answering as fast as
the hub hands out tasks). Faults are fired every `stream / (faults + 1)` seconds while frames flow; after the
stream ends the run waits up to `--drain-s` for the outbox to empty.

Columns (per run): escalated = samples sent to people; fused_once = escalated samples with exactly one result
from a reply (fused, or late after patience_s); duplicated = with more than one; unconverged = still in the
outbox without a reply at the end; lost = neither answered nor in the outbox; converge_s p50/p99 = seconds from
escalation to the reply's result; duplicate_replies_per_sample = replies the agent received for samples it had
already settled / escalated; fused_in_patience = share answered within patience_s (not `late`); hub_* = what the
hub's database holds (every escalated sample once, one reply each). Targets: 0 lost, 0 duplicated,
0 unconverged, duplicate replies per sample <= 2.

Run: nice -n 10 .venv/bin/python tools/bench/soak.py [--runs broker,hub,...] [--scale 1.0]
Writes tools/bench/results/soak.{json,md,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, write_results
from hgen.compiler.testing import cached_litert_bundles
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.clock import StreamClock
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.testing import digits_28, restartable_broker, write_video
from hgen.hub.testing.hub_process import HubProcess, hub_process_config, kb_counts
from hgen.hub.testing.services import free_port, postgres
from soak_report import COLUMNS, OUTAGE_FPS, PATIENCE_S, RESEND_AFTER_S, plot, report
from soak_report import DEVICE_FPS as FPS
from soaklib import Observer, summarise

log = logging.getLogger("soak")
DEVICE = "soak-cam"
OUTAGE_DEADLINE_S = 2 * 3600.0  # a team that expects hours offline gives people that long (the default is 600 s)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Run:
    """One soak run: a fault kind, its count, the transport and database, and the stream length in frames."""

    name: str
    fault: str
    transport: str
    db: str
    faults: int
    frames: int


def plan(scale: float) -> list[Run]:
    """The issue's runs; `scale` shortens the streams (and so the time between faults), never the fault counts."""
    frames = lambda n: max(600, int(n * scale))
    return [
        Run("broker", "broker kill -9", "mqtt", "sqlite", 100, frames(12_000)),
        Run("hub-sqlite-mqtt", "hub kill -9", "mqtt", "sqlite", 10, frames(4_800)),
        Run("hub-sqlite-grpc", "hub kill -9", "grpc", "sqlite", 10, frames(4_800)),
        Run("hub-pg-mqtt", "hub kill -9", "mqtt", "postgresql", 10, frames(4_800)),
        Run("hub-pg-grpc", "hub kill -9", "grpc", "postgresql", 10, frames(4_800)),
        Run("agent-grpc", "agent kill -9", "grpc", "sqlite", 10, frames(4_800)),
        Run("agent-mqtt", "agent kill -9", "mqtt", "sqlite", 10, frames(4_800)),
        Run("two-hubs-pg", "one of two hubs (shared PostgreSQL) kill -9", "mqtt", "postgresql", 10, frames(4_800)),
        Run("outage-grpc", "hub unreachable 30 min (stream time)", "grpc", "sqlite", 1, 30 * 60 * OUTAGE_FPS),
        Run("outage-mqtt", "hub unreachable 30 min (stream time)", "mqtt", "sqlite", 1, 30 * 60 * OUTAGE_FPS),
    ]


# --- the stack ------------------------------------------------------------------------------------------


class Stack:
    """Broker (for MQTT), database, hub process(es), and the agent's config for one run."""

    def __init__(self, run: Run, work: Path, pg: Any, video: Path, bundles: dict[str, Path]) -> None:
        self.run, self.work, self.video, self.bundles = run, work, video, bundles
        self.db_url = pg.create_database(run.name.replace("-", "_")) if run.db == "postgresql" \
            else f"sqlite:///{work / 'hub.db'}"
        self.secret = enroll(self.db_url, DEVICE)
        self.broker: Any = None
        self.hubs: list[HubProcess] = []

    @contextlib.contextmanager
    def up(self, hubs: int = 1) -> Iterator[Stack]:
        with (restartable_broker() if self.run.transport == "mqtt" else contextlib.nullcontext()) as broker:
            self.broker = broker
            for i in range(hubs):
                shared = {"share_group": "hubs"} if hubs > 1 else {}
                mqtt = broker.hub_mqtt(client_id=f"soak-hub-{i}", **shared) if broker is not None else None
                config = hub_process_config(self.work, self.db_url, [DEVICE], free_port(), mqtt)
                self.hubs.append(HubProcess(self.work / f"hub{i}.yaml", config))
            try:
                for hub in self.hubs:
                    hub.start()
                yield self
            finally:
                for hub in self.hubs:
                    hub.stop()

    @property
    def url(self) -> str:
        return self.broker.url if self.broker is not None else self.hubs[0].grpc_url

    def agent_data(self, frames: int, fps: float | None = FPS) -> dict[str, Any]:
        return {
            "device_id": DEVICE,
            "bundle": {"path": str(self.bundles["v1"]), "public_key": str(self.bundles["public_key"]),
                       "expected_target": "x86_64", "store_dir": str(self.work / "store")},
            "source": {"kind": "video", "uri": str(self.video), "loop": True, "max_frames": frames,
                       **({"fps_limit": fps} if fps else {})},
            "gate": {"tau": 0.9, "audit_share": 0.0},
            "batching": {"size": 8, "max_wait_s": 0.3, "patience_s": PATIENCE_S},
            "hub": {"url": self.url, "resend_after_s": RESEND_AFTER_S, "secret": self.secret,
                    "watch_updates": False},
            "outbox": {"path": str(self.work / "outbox.sqlite")},
            "telemetry": {"status_interval_s": 2.0},
        }

    def restart(self, index: int = 0) -> Callable[[], None]:
        def fault() -> None:
            self.hubs[index].kill9()
            self.hubs[index].start()
        return fault

    def broker_crash(self) -> None:
        self.broker.kill9()
        self.broker.start()


def enroll(db_url: str, device: str) -> str:
    from hgen.hub.devices import DeviceCredentials
    from hgen.hub.kb.store import KnowledgeBase

    kb = KnowledgeBase.open(db_url)
    try:
        return DeviceCredentials(kb).add(device).secret
    finally:
        kb.close()


def every(period_s: float, faults: list[Callable[[], None]], stop: threading.Event) -> int:
    """Fire `faults` one by one, `period_s` apart (a benchmark's schedule, not a test's synchronisation)."""
    fired = 0
    for fault in faults:
        if stop.wait(period_s):
            break
        fault()
        fired += 1
    return fired


# --- runs -----------------------------------------------------------------------------------------------


def soak_in_process(stack: Stack, faults: list[Callable[[], None]], drain_s: float) -> dict[str, Any]:
    """The agent in this process; faults fired while the stream runs; then drain."""
    run, observer, stop = stack.run, Observer(), threading.Event()
    observer.sample_depth(stack.work / "outbox.sqlite", stop)
    config = parse_agent_config(stack.agent_data(run.frames))
    with Agent(config, callbacks=[observer]) as agent:
        fired = every(run.frames / FPS / (len(faults) + 1), faults, threading.Event())  # all, even past the end
        agent.wait(None)
        drained = drain(agent, drain_s)
    stop.set()
    return finish(stack, observer, fired, *drained)


def soak_agent_kills(stack: Stack, drain_s: float) -> dict[str, Any]:
    """`hgen-agent run` in a subprocess, killed with SIGKILL `faults` times and restarted on the same outbox;
    the last segment runs in this process to drain (its duplicate replies are the only ones counted)."""
    run, observer, stop = stack.run, Observer(), threading.Event()
    observer.sample_depth(stack.work / "outbox.sqlite", stop)
    segment = run.frames // (run.faults + 1)
    results = stack.work / "results.jsonl"
    for _ in range(run.faults):
        data = stack.agent_data(segment * 4)  # killed long before its end
        data["sinks"] = [{"kind": "jsonl", "path": str(results)}]
        path = stack.work / "agent.yaml"
        path.write_text(yaml.safe_dump(data))
        process = subprocess.Popen([sys.executable, "-m", "hgen.edge_agent.cli", "run", "--config", str(path),
                                    "--log-level", "ERROR"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop.wait(segment / FPS)
        process.kill()
        process.wait()
    observer.read_jsonl(results)
    with Agent(parse_agent_config(stack.agent_data(segment)), callbacks=[observer]) as agent:
        agent.wait(None)
        drained = drain(agent, drain_s)
    stop.set()
    return finish(stack, observer, run.faults, *drained)


def soak_outage(stack: Stack, drain_s: float) -> dict[str, Any]:
    """The hub (started once, so its broker session exists) is killed and the whole stream plays unpaced while the
    agent's injected clock (StreamClock) runs at the stream's rate, frame i at i / OUTAGE_FPS s: patience, the resend
    back-off, deadlines and the labour window see the outage's full length pass. Then the hub starts and the
    backlog drains (in real time); every sample times out on patience_s first, as it would. The default outbox
    (100,000 samples) holds a 30-minute outage."""
    run, clock, stop = stack.run, StreamClock(), threading.Event()
    observer = Observer(clock=clock.monotonic)
    observer.sample_depth(stack.work / "outbox.sqlite", stop, every_s=2.0)
    for hub in stack.hubs:
        hub.kill9()
    data = stack.agent_data(run.frames, fps=None)
    data["batching"]["deadline_s"] = OUTAGE_DEADLINE_S

    def pace(result: Any) -> None:
        if result.status.value in ("model", "pending"):  # one per frame
            clock.advance_to(result.frame_index / OUTAGE_FPS)

    with Agent(parse_agent_config(data), callbacks=[pace, observer], clock=clock) as agent:
        agent.wait(None)
        outage_s = clock.elapsed()
        for hub in stack.hubs:
            hub.start()
        drained = drain(agent, drain_s)
        resent = agent.telemetry.count("resent_samples")
    stop.set()
    return {**finish(stack, observer, 1, *drained), "outage_clock_s": round(outage_s), "resent_samples": resent}


def drain(agent: Agent, drain_s: float) -> tuple[set[str], int, float]:
    """After the stream: wait up to `drain_s` for the outbox to empty; what is left, duplicate replies, seconds."""
    ended = time.monotonic()
    agent.wait_outbox_empty(drain_s)
    drained = time.monotonic() - ended
    return {row.sample_id for row in agent.outbox.pending()}, agent.telemetry.count("duplicate_replies"), drained


def finish(stack: Stack, observer: Observer, fired: int, left: set[str], duplicates: int,
           drained: float) -> dict[str, Any]:
    samples, replies, multi = kb_counts(stack.db_url)
    row = summarise(observer, fault=stack.run.fault, transport=stack.run.transport, faults=fired,
                    still_in_outbox=left, hub_samples=samples, hub_replies=replies, hub_multi=multi,
                    duplicate_replies=duplicates, drain_s=drained)
    return {"run": stack.run.name, "db": stack.run.db, "frames": stack.run.frames, **row}


def soak(run: Run, pg: Any, video: Path, bundles: dict[str, Path], drain_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"soak-{run.name}-") as tmp:
        stack = Stack(run, Path(tmp), pg, video, bundles)
        if run.name.startswith("outage"):
            with stack.up():
                return soak_outage(stack, drain_s)
        if run.name.startswith("agent"):
            with stack.up():
                return soak_agent_kills(stack, drain_s)
        hubs = 2 if run.name == "two-hubs-pg" else 1
        with stack.up(hubs=hubs):
            if run.name == "broker":
                faults = [stack.broker_crash] * run.faults
            else:
                faults = [stack.restart(hubs - 1)] * run.faults
            return soak_in_process(stack, faults, drain_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="stream length factor (fault counts stay)")
    parser.add_argument("--outage-frames", type=int, default=0, help="override the outage stream length")
    parser.add_argument("--drain-s", type=float, default=3600.0,
                        help="cap on the wait for the outbox to empty (a 30-min outage drains in 760-1,614 s here)")
    parser.add_argument("--out", default="soak")
    parser.add_argument("--merge", action="store_true", help="keep the other runs already in the results file")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the .json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    runs = plan(args.scale)
    if args.outage_frames:
        runs = [Run(r.name, r.fault, r.transport, r.db, r.faults, args.outage_frames)
                if r.name.startswith("outage") else r for r in runs]
    if args.runs:
        by_name = {r.name: r for r in runs}
        runs = [by_name[name] for name in args.runs.split(",")]  # in the order given
    if args.report_only:
        save(json.loads((RESULTS / f"{args.out}.json").read_text())["runs"], args, 0.0)
        return 0
    bundles = cached_litert_bundles(ROOT / "tests" / "artifacts" / "agent_bundles")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    if args.merge and (RESULTS / f"{args.out}.json").exists():
        names = {r.name for r in runs}
        rows = [r for r in json.loads((RESULTS / f"{args.out}.json").read_text())["runs"] if r["run"] not in names]
    with tempfile.TemporaryDirectory(prefix="soak-video-") as tmp, postgres() as pg:
        images, _ = digits_28(200)
        video = write_video(Path(tmp) / "digits.avi", 200, images=images)
        for run in runs:
            t0 = time.monotonic()
            try:
                rows.append(soak(run, pg, video, bundles, args.drain_s))
            except Exception as exc:  # one broken run must not cost the others; it is reported, not hidden
                log.exception("run %s failed", run.name)
                rows.append({"run": run.name, "fault": f"{run.fault}: RUN FAILED ({exc})", "transport": run.transport,
                             "db": run.db, "faults": 0, "frames": run.frames, "outbox_depth": []})
            rows[-1]["wall_s"] = round(time.monotonic() - t0)
            print(f"{run.name}: {({k: rows[-1].get(k) for k in COLUMNS})}", flush=True)
            save(rows, args, time.monotonic() - started)  # after every run: a long soak keeps what it measured
    return 0


def save(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    order = [run.name for run in plan(1.0)]
    rows = sorted(rows, key=lambda row: order.index(row["run"]) if row["run"] in order else len(order))
    for row in rows:  # the outage's length is what was run, not what the plan asked for
        if row["run"].startswith("outage") and "RUN FAILED" not in row["fault"]:
            row["fault"] = f"hub unreachable {row['frames'] / OUTAGE_FPS / 60:g} min of stream time ({OUTAGE_FPS} fps)"
    data = {"runs": rows, "scale": args.scale, "patience_s": PATIENCE_S, "resend_after_s": RESEND_AFTER_S,
            "fps": FPS, "annotators": "SIMULATED", "seconds": round(seconds)}
    write_results(args.out, data, report(rows, __doc__.split("\n\n")[1], args.scale))
    plot(rows, RESULTS / f"{args.out}.png")


if __name__ == "__main__":
    raise SystemExit(main())
