"""The demo's running parts: the compile, a private authenticated Mosquitto (MQTT) or gRPC, the hub with the
SIMULATED crowd, the video the agent reads as its camera, and the agent; each registered on the caller's ExitStack."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hgen.compiler.demo.config import DEVICE_ID, DemoConfig, Log
from hgen.compiler.demo.stream import FrameLog


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
                    "field": {"audit_share": config.audit_share, "unfamiliar_share": config.unfamiliar_share}},
    }
    if config.field:  # learn the field: re-fit the gate on its first labels, for the labour demand
        data["retrain"]["field"]["min_samples"] = max(5, config.retrain_threshold // 8)  # ~1/5 is held out
        # the first retrain's labels render the originals in the field's style (a small demo's are under 50)
        data["retrain"]["field"]["style_min_images"] = max(2, min(50, config.retrain_threshold // 2))
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
    from hgen.edge_agent.transports.base import TRANSPORTS, parse_endpoint
    from hgen.hub.broker_acl import open_registry
    from hgen.hub.config import parse_hub_config
    from hgen.hub.testing.services import BrokerAccessFiles

    hub_side: dict[str, Any] = {"knowledge_base": {"url": f"sqlite:///{out / 'hub.sqlite'}"}}
    if TRANSPORTS.get(parse_endpoint(hub_url).scheme).via_broker:  # the account must reach the broker's files too
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
        "gate": {"tau": config.tau_override, "audit_share": config.audit_share,
                 "unfamiliar_share": config.unfamiliar_share},
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
    for name in ("hub-models", "agent-bundles", "broker", "labels"):
        shutil.rmtree(out / name, ignore_errors=True)
