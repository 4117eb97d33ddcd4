"""The main job end to end: compile -> deploy -> field stream -> people -> retrain -> hot swap -> summary.

Every stage is a small function over real components: `compile_hdnn` (search, lowering, signing), a `HubApp` (gRPC,
or MQTT through a Mosquitto broker when one is installed) with the SIMULATED crowd answering through the annotator
API, and an `Agent` reading a video file through OpenCV (a camera cannot run here). Held-out test images (never used
in training) are split into a streaming pool, which becomes the video the agent cycles like a camera that never stops,
and an evaluation pool on which both versions are measured (`pools.py`). The demo knows each frame's true class,
which is how simulated people "see" a frame. Demands and training length come from a per-dataset preset.
Everything started is registered on one ExitStack, so it is stopped on success, failure and Ctrl-C alike.

Modules: `config.py` (settings, presets), `services.py` (compile, broker, hub, video, agent), `stream.py` (frame
log and waits), `pools.py` (streaming and evaluation pools), `summary.py`, `detection.py` (box data sets).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hgen.compiler.data.detection import DetectionSplit
from hgen.compiler.demo.config import (DEVICE_ID, DemoConfig, DemoError, Log, demo_config, format_demands,
                                       with_preset)
from hgen.compiler.demo.pools import Pools, evaluate_versions, split_pools
from hgen.compiler.demo.services import (choose_transport, compile_stage, fresh_run_folder, hub_config, start_agent,
                                         start_broker, start_hub, write_stream)
from hgen.compiler.demo.stream import FrameLog, model_name, run_that_made, stream_until_swapped, wait_for
from hgen.compiler.demo.summary import format_summary, summarise
from hgen.compiler.errors import DemandsNotMetError, InvalidArgumentError

__all__ = ["DEVICE_ID", "DemoConfig", "DemoError", "FrameLog", "check_outcome", "compile_stage", "demo_config",
           "format_demands", "hub_config", "run_demo", "wait_for", "with_preset"]


def run_demo(config: DemoConfig, log: Log = print) -> dict[str, Any]:
    """All stages; returns the summary (also written to OUT/summary.json). Raises DemoError on any failure or a
    dropped frame, DemandsNotMetError on a missed demand (both after writing the summary)."""
    from hgen.compiler.demo.detection import dataset_base, is_detection, load_demo_data, truth_of
    from hgen.edge_agent.transports import TRANSPORTS

    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    fresh_run_folder(out)
    data = load_demo_data(config.dataset, seed=config.seed, limit=config.limit)
    config = with_preset(config, dataset_base(data))
    field = field_data(config, data)
    pools = split_pools(field.test, config.eval_share, config.seed)
    log(f"[1/7] data: {data.name} from {data.origin}"
        + (f" ({data.note})" if data.note else "")
        + (f"; the field shows {field.name}, which the compile never sees" if config.field else ""))
    log(f"      demands for {data.name}: {format_demands(config.demands)}")  # type: ignore[arg-type]
    log(f"[2/7] hgen-compile for {config.device}: search, fine-tune, lower ({', '.join(config.engines)}), sign")
    compiled = compile_stage(config, data.name, out, log)
    transport = choose_transport(config)
    with ExitStack() as stack:
        broker_url = start_broker(stack, out) if TRANSPORTS.get(transport).via_broker else None
        frames = FrameLog(truth_of(pools.stream), boxes=is_detection(data))
        app = start_hub(stack, config, compiled, data.name, data.num_classes, out, broker_url, frames,
                        pools.stream.x.shape[1])
        grpc_url = app.publisher().fetch_uri()  # where the agent fetches bundles (the gRPC transport)
        hub_url = broker_url or grpc_url
        log(f"[3/7] hub on {hub_url} ({'MQTT through mosquitto' if broker_url else 'gRPC: mosquitto is not installed'})"
            f", SIMULATED crowd of {config.m}, retrain threshold lowered to {config.retrain_threshold} human labels")
        video = write_stream(out, pools.stream.x, config.fps)
        log(f"[4/7] streaming pool: {len(pools.stream)} held-out test images as a video at {config.fps:g} fps"
            f"{', cycled until the swap' if config.loop_stream else ''}; evaluation pool: {len(pools.evaluation)} "
            f"other ones, never streamed")
        agent = start_agent(stack, config, compiled, video, hub_url, grpc_url, out, frames)
        first = agent.model.version
        log(f"[5/7] agent running bundle {first}; waiting for people, the retrain and the hot swap (at most "
            f"{config.timeout_minutes:g} min: --timeout-minutes)")
        stream_until_swapped(config, app, agent, frames, first, log)
        agent.end_stream()
        agent.wait(60)
        if not agent.wait_settled(120):
            log("      some samples were still waiting for people; their model answers stand")
        agent.stop()
        run = run_that_made(app, frames.last_version())
        evaluation = evaluate_stage(config, compiled, app, pools, first, run.to_version)
        summary = summarise(config, compiled, data, frames, agent, app, (first, run), evaluation, transport, start)
        summary["labels_export"] = export_stage(app, out)
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
                             m=config.m, annotator_accuracy=config.annotator_accuracy, seed=config.seed + 1,
                             unfamiliar_share=config.unfamiliar_share)


def export_stage(app: Any, out: Path) -> dict[str, Any]:
    """The people's labels of the run as a data set (`hgen-hub export`): what a team takes out of its hub."""
    from hgen.hub.export.run import ExportSettings, export_labels

    report = export_labels(app.service.kb, model_name(app), out / "labels", ExportSettings.of_hub(app.config))
    return {"folder": str(report.folder), "format": report.data_format, "written": report.written,
            "simulated": report.simulated, "skipped": report.skipped, "dataset": report.dataset}


def check_outcome(summary: dict[str, Any], enforce_demands: bool = True) -> None:
    if summary["dropped_frames"] != 0:
        raise DemoError(f"{summary['dropped_frames']} frames were dropped (must be 0)")
    missed = [name for name, met in summary["demands_met"].items() if not met]
    if missed and enforce_demands:  # everything ran and was written: exit 4, as a compile that misses a demand
        raise DemandsNotMetError(f"demands not met: {', '.join(missed)} (see {summary['paths']['report']})")
