"""The main job end to end: compile -> deploy -> field stream -> people -> retrain -> hot swap -> summary.

Every stage is a small function over real components: `compile_hdnn` (search, lowering, signing), a `HubApp` (gRPC,
or MQTT through a Mosquitto broker when one is installed) with the SIMULATED crowd answering through the annotator
API, and an `Agent` reading a video file through OpenCV (a camera cannot run here). Held-out test images (never used
in training) are split into a streaming pool, which becomes the video the agent cycles like a camera that never stops,
and an evaluation pool on which both versions are measured (`pools.py`). The demo knows each frame's true class,
which is how simulated people "see" a frame. Demands and training length come from a per-dataset preset.
Everything started is registered on one ExitStack, so it is stopped on success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from hgen.compiler.data.detection import DetectionSplit
from hgen.compiler.demo.pools import Pools, evaluate_versions, split_pools
from hgen.compiler.demo.presets import preset_for
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.search.objective import Demands
from hgen.compiler.demo.summary import format_summary, summarise
from hgen.runtime.config import StrictModel, parse_config

Log = Callable[[str], None]
DEVICE_ID = "demo-device"


class DemoError(CompilerError):
    """A demo stage failed; the message names the stage and why."""


class DemoConfig(StrictModel):
    """The demo's knobs; defaults finish in a few minutes on 2 cores. Unset demands and epochs come from the
    dataset's preset (`presets.py`)."""

    dataset: str = Field("auto:lowres", title="Dataset spec (auto: FashionMNIST when installed, else digits)")
    device: str = Field("rpi4", title="Device profile to compile for")
    model: str = Field("lenet5", title="Zoo model name or a Keras file to compile")
    out: str = Field("build/demo", title="Where the bundles, logs, report and summary go")
    demands: Demands | None = Field(None, title="Demands and budgets (default: the dataset's preset)")
    episodes: int = Field(12, ge=1, title="Search episode budget")
    budget_minutes: float = Field(4.0, gt=0, title="Search wall-time budget")
    base_epochs: int | None = Field(None, ge=1, title="Backbone training epochs (default: the dataset's preset)")
    final_epochs: int | None = Field(None, ge=1, title="Winner's fine-tune epochs (default: the dataset's preset)")
    finetune_samples: int = Field(4000, ge=100, title="Training samples per candidate fine-tune")
    engines: tuple[str, ...] = Field(("litert", "tvm"), title="Engines in the compiled bundle")
    limit: int | None = Field(None, ge=50, title="Cap on each split (quick runs and tests)")
    transport: str = Field("auto", pattern="^(auto|grpc|mqtt)$", title="auto: MQTT when mosquitto is installed")
    retrain_threshold: int = Field(150, ge=5, title="Human labels that trigger a retrain (lowered for the demo)")
    retrain_min_holdout: int = Field(10, ge=1, title="Held-out human labels the retrain's acceptance check needs")
    retrain_tolerance: float = Field(0.005, ge=0, le=0.1, title="Acceptance tolerance of the demo hub (about the "
                                                                "standard error of a test-split accuracy)")
    tau_override: float | None = Field(None, ge=0, le=1, title="Deployment override of the bundle's tau (agent gate)")
    fps: float = Field(100.0, gt=0, title="Frame rate of the generated video stream")
    loop_stream: bool = Field(True, title="Cycle the streaming pool like a camera that never stops (accuracy is "
                                          "measured on the evaluation pool, which is never streamed)")
    enforce_demands: bool = Field(True, title="Fail when a demand is missed (off for searches too short to meet "
                                              "them, as in the tests)")
    eval_share: float = Field(0.5, gt=0, lt=1, title="Share of the test images kept apart as the evaluation pool")
    frames_after_swap: int = Field(1500, ge=10, title="Frames to stream on the new model before stopping")
    m: int = Field(3, ge=1, le=4, title="Simulated annotators per sample")
    annotator_accuracy: float = Field(0.9, ge=0, le=1, title="Accuracy of each simulated annotator")
    timeout_minutes: float = Field(20.0, gt=0, title="Give up on the stream stage after this long")
    field: str | None = Field(None, pattern=r"^[a-z]+$", title="A condition only the field shows (a dataset variant: "
                              "noise, lowres, lowlight, blur): the model is compiled on `dataset`, the stream and "
                              "the evaluation pool are its test images under this variant, and the hub re-fits the "
                              "gate on the field's labels")
    audit_share: float = Field(0.02, ge=0, le=1, title="Share of confident frames the agent also sends to people "
                                                       "(the hub weights them as the field)")
    seed: int = Field(0, title="Seed")


def demo_config(**values: Any) -> DemoConfig:
    return parse_config(DemoConfig, values, source="demo settings", error=InvalidArgumentError)


def with_preset(config: DemoConfig, base: str) -> DemoConfig:
    """Fill what the user left unset from the preset of the dataset actually found (`auto` resolved)."""
    preset = preset_for(base)
    return config.model_copy(update={
        "demands": config.demands or preset.demands,
        "base_epochs": config.base_epochs or preset.base_epochs,
        "final_epochs": config.final_epochs or preset.final_epochs,
    })


def format_demands(demands: Demands) -> str:
    return (f"A >= {demands.accuracy:g}, T <= {demands.latency_ms:g} ms, S <= {demands.storage_mb:g} MB, "
            f"E <= {demands.energy_mj:g} mJ, L <= {demands.labour:g}")


@dataclass
class FrameLog:
    """The agent's results by frame (final ones replace pending ones) and the sample id -> frame map."""

    truth: Any  # per frame: a class, or true boxes (detection)
    boxes: bool = False
    results: dict[int, Any] = field(default_factory=dict)
    frame_of: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, result: Any) -> None:
        with self.lock:
            if result.sample_id:
                self.frame_of[result.sample_id] = result.frame_index
            if result.final or result.frame_index not in self.results:
                self.results[result.frame_index] = result

    def oracle(self, sample_id: str) -> int:
        """What a person sees in the frame: its true class (the simulated crowd then errs at its own rate)."""
        with self.lock:
            return int(self.truth[self.frame_of[sample_id] % len(self.truth)])

    def frames_after(self, version: str) -> int:
        """Frames run by any version other than `version` (the first one)."""
        with self.lock:
            return sum(1 for r in self.results.values() if r.bundle_version != version)

    def last_version(self) -> str:
        """The version that ran the stream's last frame: a retrain published after the stream ended may still be
        swapped in, but no frame ran on it, so it is not the one the demo reports."""
        with self.lock:
            return self.results[max(self.results)].bundle_version

    def accuracy(self, version: str) -> dict[str, float]:
        with self.lock:
            mine = [r for r in self.results.values() if r.bundle_version == version and r.final]
        if self.boxes:
            from hgen.compiler.demo.detection import stream_accuracy

            return stream_accuracy(mine)
        if not mine:
            return {"frames": 0, "model_only": float("nan"), "fused": float("nan"), "share_to_people": float("nan")}
        truth = [int(self.truth[r.frame_index % len(self.truth)]) for r in mine]
        return {"frames": len(mine),
                "model_only": sum(r.model_label == t for r, t in zip(mine, truth)) / len(mine),
                "fused": sum(r.label == t for r, t in zip(mine, truth)) / len(mine),
                "share_to_people": sum(r.status.value != "model" for r in mine) / len(mine)}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll a cheap condition with a deadline (the components expose state, not events, for these)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        threading.Event().wait(poll_s)


def compile_stage(config: DemoConfig, dataset: str, out: Path, log: Log) -> Any:
    from hgen.compiler.compile import compile_config, compile_hdnn

    assert config.demands is not None, "with_preset fills the demands"
    settings = compile_config(model=config.model, dataset=dataset, device=config.device,
                              demands=config.demands.model_dump(),
                              episodes=config.episodes, budget_minutes=config.budget_minutes,
                              base_epochs=config.base_epochs, final_epochs=config.final_epochs,
                              finetune_samples=config.finetune_samples, engines=config.engines, limit=config.limit,
                              m=config.m, annotator_accuracy=config.annotator_accuracy, seed=config.seed,
                              out=str(out / "compile"))
    return compile_hdnn(settings, log=lambda message: log(f"      {message}"))


def choose_transport(config: DemoConfig) -> str:
    from hgen.hub.testing.services import ServiceUnavailableError, mosquitto_binary

    if config.transport != "auto":
        return config.transport
    try:
        mosquitto_binary()
    except ServiceUnavailableError:
        return "grpc"
    return "mqtt"


def start_broker(stack: ExitStack, out: Path) -> str:
    """A private Mosquitto that authenticates every client; the hub writes its accounts and ACL (hub_config)."""
    from hgen.hub.testing.services import mosquitto

    (out / "broker").mkdir(parents=True, exist_ok=True)
    broker = stack.enter_context(mosquitto(out / "broker"))
    return f"mqtt://127.0.0.1:{broker.port}"


def hub_config(config: DemoConfig, compiled: Any, dataset: str, out: Path, broker_url: str | None) -> Any:
    from urllib.parse import urlsplit

    from hgen.hub.config import parse_hub_config
    from hgen.hub.testing.services import free_port

    bundle = compiled.summary["bundle"]
    data: dict[str, Any] = {
        "devices": [DEVICE_ID], "knowledge_base": {"url": f"sqlite:///{out / 'hub.sqlite'}"},
        "grpc": {"port": free_port()},
        "retrain": {"enabled": True, "store_dir": str(out / "hub-models"), "signing_key": bundle["signing_key"],
                    "models": [{"name": compiled.summary["model"], "kind": compiled.summary.get("kind", "cnn"),
                                "keras_model": str(compiled.out / "model.keras"),
                                "bundle": bundle["dir"], "dataset": dataset, "dataset_limit": config.limit,
                                "devices": {DEVICE_ID: compiled.summary["device"]["target"]},
                                "threshold": config.retrain_threshold,
                                "accuracy_demand": config.demands.accuracy}],
                    "min_holdout": config.retrain_min_holdout, "tolerance": config.retrain_tolerance,
                    "field": {"audit_share": config.audit_share}},
    }
    if config.field:  # learn the field: re-fit the gate on its first labels, for the labour demand
        data["retrain"]["field"]["min_samples"] = max(5, config.retrain_threshold // 8)  # ~1/5 is held out
        data["retrain"]["models"][0]["labour_demand"] = config.demands.labour
    if broker_url:
        from hgen.hub.testing.services import BrokerAccessFiles

        parts = urlsplit(broker_url)
        access = BrokerAccessFiles.load(out / "broker")
        data["mqtt"] = access.hub_mqtt(parts.hostname or "127.0.0.1", parts.port or 1883, client_id="demo-hub")
    return parse_hub_config(data)


def start_hub(stack: ExitStack, config: DemoConfig, compiled: Any, dataset: str, num_classes: int, out: Path,
              broker_url: str | None, frames: FrameLog, side: int) -> Any:
    """The hub and the SIMULATED crowd: classes from the frame's truth, or boxes drawn around it (`side` pixels)."""
    from hgen.compiler.demo.detection import start_box_crowd
    from hgen.hub.app import HubApp
    from hgen.hub.crowd import SimulatedCrowd
    from hgen.hub.testing.crowd import CrowdDriver

    app = HubApp(hub_config(config, compiled, dataset, out, broker_url)).start()
    stack.callback(app.stop)
    if frames.boxes:
        driver = start_box_crowd(app, frames, side, config.m, num_classes, config.seed)
    else:
        crowd = SimulatedCrowd.uniform(config.m, config.annotator_accuracy, num_classes, seed=config.seed)
        driver = CrowdDriver(app.service.annotators, crowd, frames.oracle).start()
    stack.callback(driver.stop)
    return app


def write_stream(out: Path, images: Any, fps: float) -> Path:
    from hgen.edge_agent.testing import write_video

    return write_video(out / "stream.avi", len(images), fps=fps, images=images)


def start_agent(stack: ExitStack, config: DemoConfig, compiled: Any, video: Path, hub_url: str, grpc_url: str,
                out: Path, frames: FrameLog) -> Any:
    from urllib.parse import urlsplit

    from hgen.edge_agent.agent import Agent
    from hgen.edge_agent.config import parse_agent_config
    from hgen.hub.broker_acl import open_registry
    from hgen.hub.config import parse_hub_config
    from hgen.hub.testing.services import BrokerAccessFiles

    hub_side: dict[str, Any] = {"knowledge_base": {"url": f"sqlite:///{out / 'hub.sqlite'}"}}
    if hub_url.startswith("mqtt"):  # the new account must reach the broker's files too, as add-device does
        parts = urlsplit(hub_url)
        hub_side["mqtt"] = BrokerAccessFiles.load(out / "broker").hub_mqtt(parts.hostname, parts.port)
    with open_registry(parse_hub_config(hub_side)) as devices:
        secret = devices.add(DEVICE_ID).secret  # the device's credential, issued by the hub (shown once)
    bundle = compiled.summary["bundle"]
    settings = parse_agent_config({
        "device_id": DEVICE_ID,
        "bundle": {"path": bundle["archive"], "public_key": bundle["public_key"],
                   "expected_target": compiled.summary["device"]["target"], "engine": "litert",
                   "store_dir": str(out / "agent-bundles")},
        "source": {"kind": "video", "uri": str(video), "fps_limit": config.fps, "pacing": "all",
                   "loop": config.loop_stream},
        "hub": {"url": hub_url, "bundle_url": grpc_url, "watch_updates": True, "secret": secret},
        "gate": {"tau": config.tau_override, "audit_share": config.audit_share},
        "outbox": {"path": str(out / "agent-outbox.sqlite")},
        "batching": {"size": 8, "max_wait_s": 1.0, "patience_s": 60.0, "labour_share": config.demands.labour},
        "sinks": [{"kind": "jsonl", "path": str(out / "results.jsonl")}],
        "telemetry": {"prometheus_port": 0, "status_interval_s": 5},
    })
    agent = Agent(settings, callbacks=[frames]).start()
    stack.callback(agent.stop)
    return agent


def fresh_run_folder(out: Path) -> None:
    """State of a previous run (hub database, outbox, downloaded bundles) must not leak into this one."""
    for name in ("hub.sqlite", "hub.sqlite-wal", "hub.sqlite-shm", "agent-outbox.sqlite", "agent-outbox.sqlite-wal",
                 "agent-outbox.sqlite-shm", "results.jsonl", "stream.avi"):
        (out / name).unlink(missing_ok=True)
    for name in ("hub-models", "agent-bundles", "broker"):
        shutil.rmtree(out / name, ignore_errors=True)


def wait_for_published_run(config: DemoConfig, app: Any, agent: Any, log: Log) -> Any:
    """The first threshold-triggered retrain that was published (a refused one is logged and the loop goes on)."""
    deadline = time.monotonic() + config.timeout_minutes * 60
    last = 0
    while True:
        if time.monotonic() > deadline or agent_finished(agent):
            raise DemoError("the stream ended before a retrain was published: lower retrain_threshold or fps")
        try:
            run = app.retrain.wait_for_run(model_name(app), after_id=last, timeout=2.0)
        except TimeoutError:
            continue
        log(f"      retrain run {run.id}: {run.status}" + (f" ({run.error})" if run.error else ""))
        if run.status == "published":
            return run
        last = run.id


def stream_until_swapped(config: DemoConfig, app: Any, agent: Any, frames: FrameLog, first: str, log: Log) -> Any:
    """Wait for a threshold-triggered retrain to publish, the agent to swap, and enough frames on newer models.

    The camera keeps streaming, so people keep answering and later retrains may publish while the agent fetches:
    the agent may skip straight to the newest version."""
    wait_for_published_run(config, app, agent, log)
    timeout = config.timeout_minutes * 60
    wait_for(lambda: agent.model.version != first, timeout, f"the agent to hot-swap from {first}")
    log(f"[6/7] agent hot-swapped {first} -> {agent.model.version}; streaming {config.frames_after_swap} more frames")
    wait_for(lambda: frames.frames_after(first) >= config.frames_after_swap or agent_finished(agent), timeout,
             "frames on the new model")


def run_that_made(app: Any, version: str) -> Any:
    """The published retrain run whose output is `version` (the demo reports the version the agent ended on)."""
    runs = app.retrain.store.runs(model_name(app), limit=1000)
    return next(run for run in runs if run.to_version == version)


def model_name(app: Any) -> str:
    return app.config.retrain.models[0].name


def agent_finished(agent: Any) -> bool:
    return agent.wait(0)


def run_demo(config: DemoConfig, log: Log = print) -> dict[str, Any]:
    """All stages; returns the summary (also written to OUT/summary.json). Raises DemoError on any failure, a
    dropped frame or a missed demand (after writing the summary)."""
    from hgen.compiler.demo.detection import dataset_base, is_detection, load_demo_data, truth_of

    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    fresh_run_folder(out)
    data = load_demo_data(config.dataset, seed=config.seed, limit=config.limit)
    config = with_preset(config, dataset_base(data))
    field = field_data(config, data)
    pools = split_pools(field.test, config.eval_share, config.seed)
    log(f"[1/7] data: {data.name} from {data.origin}"
        + (" (FashionMNIST not installed: using the bundled scikit-learn digits)" if dataset_base(data) == "digits" else "")
        + (f"; the field shows {field.name}, which the compile never sees" if config.field else ""))
    log(f"      demands for {dataset_base(data)}: {format_demands(config.demands)}")  # type: ignore[arg-type]
    log(f"[2/7] hgen-compile for {config.device}: search, fine-tune, lower ({', '.join(config.engines)}), sign")
    compiled = compile_stage(config, data.name, out, log)
    transport = choose_transport(config)
    with ExitStack() as stack:
        broker_url = start_broker(stack, out) if transport == "mqtt" else None
        frames = FrameLog(truth_of(pools.stream), boxes=is_detection(data))
        app = start_hub(stack, config, compiled, data.name, data.num_classes, out, broker_url, frames,
                        pools.stream.x.shape[1])
        grpc_url = f"grpc://127.0.0.1:{app.grpc_port}"
        hub_url = broker_url or grpc_url
        log(f"[3/7] hub on {hub_url} ({'MQTT through mosquitto' if broker_url else 'gRPC: mosquitto is not installed'})"
            f", SIMULATED crowd of {config.m}, retrain threshold lowered to {config.retrain_threshold} human labels")
        video = write_stream(out, pools.stream.x, config.fps)
        log(f"[4/7] streaming pool: {len(pools.stream)} held-out test images as a video at {config.fps:g} fps"
            f"{', cycled until the swap' if config.loop_stream else ''}; evaluation pool: {len(pools.evaluation)} "
            f"other ones, never streamed")
        agent = start_agent(stack, config, compiled, video, hub_url, grpc_url, out, frames)
        first = agent.model.version
        log(f"[5/7] agent running bundle {first}; waiting for people, the retrain and the hot swap")
        stream_until_swapped(config, app, agent, frames, first, log)
        agent.end_stream()
        agent.wait(60)
        if not agent.wait_settled(120):
            log("      some samples were still waiting for people; their model answers stand")
        agent.stop()
        run = run_that_made(app, frames.last_version())
        evaluation = evaluate_stage(config, compiled, app, pools, first, run.to_version)
        summary = summarise(config, compiled, data, frames, agent, app, (first, run), evaluation, transport, start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log("[7/7] " + format_summary(summary))
    check_outcome(summary, config.enforce_demands)
    return summary


def field_data(config: DemoConfig, data: Any) -> Any:
    """The data the camera sees: the compile's own, or its images under `config.field`'s condition."""
    from hgen.compiler.data import load_dataset

    from hgen.compiler.demo.detection import is_detection

    if not config.field:
        return data
    if is_detection(data):
        raise InvalidArgumentError("a field condition (`field`) is not supported on a detection data set yet")
    return load_dataset(f"{data.spec.base}:{config.field}", seed=config.seed, limit=config.limit)


def evaluate_stage(config: DemoConfig, compiled: Any, app: Any, pools: Pools, first: str,
                   second: str) -> dict[str, dict[str, Any]]:
    """Both versions' signed bundles on the evaluation pool (see `pools.py`)."""
    from hgen.compiler.demo.detection import evaluate_detection_versions

    bundle = compiled.summary["bundle"]
    published = next(v for v in app.retrain.store.versions(model_name(app)) if v.version == second)
    versions = {"before": (first, bundle["archive"]), "after": (second, published.bundle_dir)}
    target = compiled.summary["device"]["target"]
    if isinstance(pools.evaluation, DetectionSplit):
        return evaluate_detection_versions(versions, bundle["public_key"], target, pools.evaluation, m=config.m,
                                           seed=config.seed + 1)
    return evaluate_versions(versions, bundle["public_key"], target, pools.evaluation,
                             m=config.m, annotator_accuracy=config.annotator_accuracy, seed=config.seed + 1)


def check_outcome(summary: dict[str, Any], enforce_demands: bool = True) -> None:
    if summary["dropped_frames"] != 0:
        raise DemoError(f"{summary['dropped_frames']} frames were dropped (must be 0)")
    missed = [name for name, met in summary["demands_met"].items() if not met]
    if missed and enforce_demands:
        raise DemoError(f"demands not met: {', '.join(missed)} (see {summary['paths']['report']})")

