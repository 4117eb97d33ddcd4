"""Releases by hand: how long `hgen-hub publish` and `hgen-hub rollback` take, and how long until devices run the
new version, over MQTT (told by the serving hub's relay) and over gRPC (WatchUpdates reads the knowledge base).

    .venv/bin/python tools/bench/releases.py [--repeats 5]

Set-up, all real and on loopback: a hub serving gRPC and MQTT (Mosquitto, device credentials), SQLite, and two
agents running LeNet-5 (trained for one epoch on 300 scikit-learn digits, a LiteRT float bundle) on an MJPG video
of digits read through OpenCV (the camera stand-in): one linked by MQTT only, one by gRPC. Each round publishes a
freshly "recompiled" bundle (the deployed weights, last layer scaled; built before the clock starts) with the
CLI's code (`hgen.hub.cli.main`, in this process, with its own publisher: the serving hub learns of it from the
knowledge base), then rolls it back, each after a random pause of 0-5 s (seeded), so the commands fall anywhere in
the relay's 5 s round. The time to a device is from the command's start until the agent switched to the new
version, taken by a thread waiting on the agent's change condition. The command's time is in a warm process
(TensorFlow already imported; a fresh `hgen-hub publish` also pays its import, a few seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, markdown_table, write_results  # noqa: E402

from hgen.edge_agent.agent import Agent  # noqa: E402
from hgen.edge_agent.testing import (  # noqa: E402
    digits_28,
    start_hub,
    streaming_agent_config,
    wait_agent,
    write_video,
)
from hgen.hub.cli import main as hub_cli  # noqa: E402
from hgen.hub.testing.models import deploy_lenet, recompiled, retrain_section  # noqa: E402
from hgen.hub.testing.services import mosquitto  # noqa: E402

DEVICES = ("cam-mqtt", "cam-grpc")
TIMEOUT_S = 60.0
RELAY_POLL_S = 5.0  # BundleRelay's default poll


def swap_clock(agent: Agent, version: str, start: float, out: dict[str, float], key: str) -> threading.Thread:
    """A thread that records the seconds from `start` until `agent` runs `version` (inf if it never does)."""

    def run() -> None:
        done = wait_agent(agent, lambda: agent.model.version == version, TIMEOUT_S)
        out[key] = time.perf_counter() - start if done else float("inf")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def timed(command: list[str], version: str, agents: dict[str, Agent], rng: random.Random) -> dict[str, float]:
    """Run one hgen-hub command after a random pause (an operator does not act in step with the relay's 5 s
    rounds; without it every command followed a round at once, and measured the worst case); seconds of the
    command and until each device runs `version`."""
    time.sleep(rng.uniform(0.0, RELAY_POLL_S))
    out: dict[str, float] = {}
    start = time.perf_counter()
    clocks = [swap_clock(agent, version, start, out, device) for device, agent in agents.items()]
    if hub_cli(command) != 0:
        raise SystemExit(f"hgen-hub {command[0]} failed")
    out["command"] = time.perf_counter() - start
    for clock in clocks:
        clock.join(TIMEOUT_S + 5)
    return out


def agent_for(tmp: Path, deployed: Any, video: Path, device: str, url: str, secret: str) -> Agent:
    return Agent(streaming_agent_config(tmp, deployed.bundle_dir, deployed.public_key, video, device, url,
                                        secret)).start()


def rounds(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    deployed = deploy_lenet(tmp / "deployed", epochs=1, limit=300)
    images, _ = digits_28(100)
    video = write_video(tmp / "digits.avi", 100, images=images)
    offline = [recompiled(deployed, tmp / f"offline-{i}", version=f"1.{i + 1}.0", scale=1.0 + 0.1 * (i + 1))
               for i in range(repeats)]
    rows: list[dict[str, Any]] = []
    rng = random.Random(0)
    with mosquitto() as broker:
        retrain = retrain_section(deployed, tmp / "store", devices=dict.fromkeys(DEVICES, "x86_64"),
                                  threshold=100_000)
        hub = start_hub(tmp / "hub.db", list(DEVICES), broker=broker, overrides={"retrain": retrain})
        config = tmp / "hub.yaml"
        config.write_text(json.dumps({"knowledge_base": {"url": f"sqlite:///{tmp / 'hub.db'}"},
                                      "retrain": hub.app.config.retrain.model_dump(mode="json")}))
        urls = {"cam-mqtt": broker.url, "cam-grpc": hub.grpc_url}
        agents = {d: agent_for(tmp, deployed, video, d, urls[d], hub.secret(d)) for d in DEVICES}
        try:
            base = ["--config", str(config), "--model", deployed.name]
            for i, (bundle, keras_path) in enumerate(offline):
                published = f"1.{i + 1}.0"
                rows.append({"release": "publish", **timed(["publish", *base, "--bundle", str(bundle),
                                                            "--keras", str(keras_path)], published, agents,
                                                           rng)})
                rows.append({"release": "rollback", **timed(["rollback", *base], f"1.{i + 1}.1", agents, rng)})
        finally:
            for agent in agents.values():
                agent.stop()
            hub.stop()
    return rows


def summary(rows: list[dict[str, Any]], release: str, key: str) -> dict[str, float]:
    values = [r[key] for r in rows if r["release"] == release]
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rows = rounds(Path(folder), args.repeats)
    keys = {"command": "the command (re-sign, pack, record)",
            "cam-mqtt": "until the MQTT device runs it (relay poll 5 s)",
            "cam-grpc": "until the gRPC device runs it"}
    table = [{"release": release, "measured": what,
              **{k: f"{v:.2f}" for k, v in summary(rows, release, key).items() if k != "n"}}
             for release in ("publish", "rollback") for key, what in keys.items()]
    data = {"repeats": args.repeats, "rows": rows,
            "summary": {f"{r}/{k}": summary(rows, r, k) for r in ("publish", "rollback") for k in keys}}
    info = machine()
    markdown = "\n".join([
        "# Releases by hand: publish and rollback reaching devices",
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, {info.get('python', '?')}. "
        f"{args.repeats} rounds, each a publish then a rollback; medians with min and max, in seconds.",
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip(),
        "",
        markdown_table(table, ["release", "measured", "median_s", "min_s", "max_s"]),
        "",
        "MQTT devices hear of a bundle the CLI recorded from the serving hub's relay, which looks every 5 s: up to "
        "5 s plus the download, verification and health check. gRPC devices' WatchUpdates streams look in the "
        "knowledge base every 0.4 s here (`reply_poll_s` 0.1). A release from the operator view is announced by "
        "the serving hub itself, at once.",
    ])
    json_path, md_path = write_results("releases", data, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
