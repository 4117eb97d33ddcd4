"""Edge agent benchmark: end-to-end frames/s on a video file vs the bare engine invoke loop on the same frames,
per-frame overhead of gating + batching + fusion, the swap pause, and dropped frames during a swap at 30 fps.

    .venv/bin/python tools/bench/agent.py [--frames 1000] [--repeats 5]

Models: LeNet-5 trained briefly on scikit-learn digits (28x28 grey, ~15 us per invoke) and MobileNetV2 at 96x96 and
224x224 (random weights, BatchNorm statistics from one batch; ~0.7 and ~4 ms per invoke here), each lowered to a signed LiteRT float bundle (built once and cached in tests/artifacts/agent_bundles). Frames: MJPG
videos written with OpenCV (no camera on this machine). The hub run uses the simulated crowd (simulated annotators).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import calibrate_batch_norm, machine, markdown_table, write_results  # noqa: E402

from hgen.edge_agent.agent import Agent  # noqa: E402
from hgen.edge_agent.config import AgentConfig, BatchingConfig, parse_agent_config  # noqa: E402
from hgen.edge_agent.gating import Batcher, Gate, PendingSample  # noqa: E402
from hgen.edge_agent.model import load_model, preprocess  # noqa: E402
from hgen.compiler.testing import cached_litert_bundles  # noqa: E402
from hgen.edge_agent.testing import digits_28, start_hub, write_video  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "tests" / "artifacts" / "agent_bundles"


@dataclass(frozen=True)
class Subject:
    """One model row: its signed bundle and a video whose frames match its input."""

    name: str
    bundle: Path
    video: Path
    description: str


def lenet_subject(bundles: dict, tmp: Path, frames: int) -> Subject:
    images, _ = digits_28(300)
    video = write_video(tmp / "digits-28.avi", frames, images=images)
    return Subject("lenet5", bundles["v1"], video, "LeNet-5 (digits, 28x28 grey), LiteRT float32, batch 1")


def mobilenet_subject(size: int) -> Callable[[dict, Path, int], Subject]:
    """MobileNetV2 at `size` with random weights: the speed of a realistic device model (its answers mean nothing)."""

    def make(bundles: dict, tmp: Path, frames: int) -> Subject:
        name = f"mobilenetv2-{size}"
        path = BUNDLES / f"{name}.hgb"
        if not path.exists():
            path = build_mobilenet_bundle(bundles, path, size)
        images, _ = digits_28(300)
        video = write_video(tmp / f"digits-{size}.avi", frames, size=(size, size), images=images)
        return Subject(name, path, video, f"MobileNetV2 ({size}x{size} RGB, random weights), LiteRT float32, batch 1")

    return make


def build_mobilenet_bundle(bundles: dict, path: Path, size: int) -> Path:
    import keras

    from hgen.compiler.bundle import pack_bundle, write_bundle

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=10,
                                           classifier_activation=None)
    noise = np.random.default_rng(0).uniform(-1, 1, (64, size, size, 3)).astype(np.float32)
    calibrate_batch_norm(model, noise)
    write_bundle(path.with_suffix(""), model, name=path.stem, version="0.1.0", kind="cnn", target="x86_64",
                 labels=[str(i) for i in range(10)], input_spec={"scale": 1 / 127.5, "offset": -1.0}, tau=0.9,
                 temperature=1.0, fusion_lambda=0.4, confidence_params={"m": 3.0}, representative_data=noise,
                 engines=("litert",), signing_key=bundles["private_key"], overwrite=True)
    return pack_bundle(path.with_suffix("")).replace(path)


def config(tmp: Path, bundles: dict, video: Path, bundle: Path | None = None, **extra) -> AgentConfig:
    run = time.perf_counter_ns()  # each run its own outbox and bundle store: no run resumes another's swap
    data = {"device_id": "bench-1",
            "bundle": {"path": str(bundle or bundles["v1"]), "public_key": str(bundles["public_key"]),
                       "store_dir": str(tmp / f"store-{run}")},
            "source": {"kind": "video", "uri": str(video)}, "gate": {"audit_share": 0.0},
            "outbox": {"path": str(tmp / f"outbox-{run}.sqlite")}}
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_agent_config(data)


def decoded_inputs(video: Path, spec) -> np.ndarray:
    import cv2

    capture, inputs = cv2.VideoCapture(str(video)), []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        inputs.append(preprocess(image, spec)[0])
    capture.release()
    return np.stack(inputs)


def bare_fps(subject: Subject, bundles: dict, tmp: Path, repeats: int) -> tuple[float, int]:
    """The engine alone, one frame per invoke (as the agent runs), frames decoded and preprocessed beforehand."""
    model = load_model(subject.bundle, config(tmp, bundles, subject.video, subject.bundle).bundle)
    inputs = decoded_inputs(subject.video, model.manifest.input)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            model.engine.run(x[None])
        runs.append(len(inputs) / (time.perf_counter() - start))
    model.close()
    return statistics.median(runs), len(inputs)


def naive_fps(subject: Subject, bundles: dict, tmp: Path, repeats: int) -> float:
    """What a hand-written loop does without the agent: decode, preprocess, invoke, one after the other."""
    import cv2

    model = load_model(subject.bundle, config(tmp, bundles, subject.video, subject.bundle).bundle)
    runs = []
    for _ in range(repeats):
        capture, count = cv2.VideoCapture(str(subject.video)), 0
        start = time.perf_counter()
        while True:
            ok, image = capture.read()
            if not ok:
                break
            model.engine.run(preprocess(image, model.manifest.input)[0][None])
            count += 1
        runs.append(count / (time.perf_counter() - start))
        capture.release()
    model.close()
    return statistics.median(runs)


def measure(subject: Subject, bundles: dict, tmp: Path, repeats: int) -> dict:
    """One model row: bare invoke loop, naive loop, and the agent with and without the prefetching reader.

    The four loops take turns within each repeat (not all bare runs first), so a shared machine's slow and fast
    spells fall on every loop alike; the ratios are of the medians."""
    runs: dict[str, list[float]] = {"bare": [], "naive": [], "agent": [], "inline": []}
    snap: dict = {}
    frames = 0
    for _ in range(repeats):
        bare, frames = bare_fps(subject, bundles, tmp, 1)
        runs["bare"].append(bare)
        runs["naive"].append(naive_fps(subject, bundles, tmp, 1))
        agent, snap = agent_fps(lambda: config(tmp, bundles, subject.video, subject.bundle, gate={"tau": 0.0}), 1)
        runs["agent"].append(agent)
        runs["inline"].append(agent_fps(lambda: config(tmp, bundles, subject.video, subject.bundle, gate={"tau": 0.0},
                                                       source={"prefetch": 0}), 1)[0])
    bare, naive, agent, inline = (statistics.median(runs[k]) for k in ("bare", "naive", "agent", "inline"))
    return {"model": subject.name, "description": subject.description, "frames": frames, "bare_fps": bare,
            "naive_fps": naive, "agent_fps": agent, "agent_fps_no_prefetch": inline, "ratio": agent / bare,
            "ratio_no_prefetch": inline / bare, "ratio_to_naive": agent / naive,
            "inference_ms_p50": snap["inference_ms_p50"], "inference_ms_p99": snap["inference_ms_p99"],
            "runs_fps": runs}


def agent_fps(cfg_factory, repeats: int) -> tuple[float, dict]:
    """The clock starts before `start()`, so opening the source and the prefetch head start count against it."""
    runs, snap = [], {}
    for _ in range(repeats):
        agent = Agent(cfg_factory())
        try:
            start = time.perf_counter()
            agent.start()
            agent.wait()
            elapsed = time.perf_counter() - start
            snap = agent.telemetry.snapshot()
        finally:
            agent.stop()
        runs.append(snap["frames"] / elapsed)
    return statistics.median(runs), snap


def overhead_us(bundles: dict, video: Path, tmp: Path, n: int = 2000) -> float:
    """Median per-frame microseconds of gate + difficulty/labour + pool offer + fusion, on real logits."""
    model = load_model(bundles["v1"], config(tmp, bundles, video).bundle)
    logits = model.infer(decoded_inputs(video, model.manifest.input)[:50])
    gate, batcher = Gate(config(tmp, bundles, video).gate), Batcher(BatchingConfig(size=1024, max_wait_s=1e9))
    answers = np.asarray([[1, 1, 2]])
    times = []
    for i in range(n):
        row = logits[i % len(logits)][None]
        start = time.perf_counter()
        probs = model.probabilities(row)
        gate.decide(float(probs.max()), 1.0, float(i))  # tau 1: every sample escalates (worst case)
        model.kind.predict(row, model.params)
        labour = batcher.labour_of(float(model.difficulty.difficulty(probs)[0]), model.m)
        batcher.offer(PendingSample(str(i), b"", labour), 0.0)
        if batcher.due(0.0):
            batcher.take()
        model.kind.fuse(row, answers, model.params)
        times.append(time.perf_counter() - start)
    model.close()
    return statistics.median(times) * 1e6


def swap_run(bundles: dict, video: Path, tmp: Path) -> dict:
    """A live 30 fps stream; v2 is loaded, health-checked and switched in after 60 frames."""
    cfg = config(tmp, bundles, video, source={"fps_limit": 30, "pacing": "live", "max_frames": 180, "loop": True},
                 gate={"tau": 0.0})
    seen = threading.Event()
    count = [0]

    def on_result(_result) -> None:
        count[0] += 1
        if count[0] == 60:
            seen.set()

    with Agent(cfg, callbacks=[on_result]) as agent:
        seen.wait(30)
        start = time.perf_counter()
        agent.swap_to(bundles["v2"])
        prepare_ms = (time.perf_counter() - start) * 1e3
        agent.wait(30)
        snap = agent.telemetry.snapshot()
        version = agent.model.version
    return {"swap_pause_ms": snap["swap_ms"], "prepare_ms": prepare_ms, "dropped_frames": int(snap["frames_dropped"]),
            "frames": int(snap["frames"]), "version_after": version, "swaps": int(snap["swaps"])}


def hub_run(bundles: dict, video: Path, tmp: Path) -> dict:
    """The same video with escalations (tau 0.9) answered by the simulated crowd over gRPC."""
    hub = start_hub(tmp / "hub.db", ["bench-1"])
    try:
        cfg = config(tmp, bundles, video, gate={"tau": 0.9}, hub={"url": hub.grpc_url, "secret": hub.secret("bench-1")},
                     batching={"size": 16, "max_wait_s": 0.2})
        with Agent(cfg) as agent:
            start = time.perf_counter()
            agent.wait()
            elapsed = time.perf_counter() - start
            agent.wait_outbox_empty(60)
            snap = agent.telemetry.snapshot()
    finally:
        hub.stop()
    return {"fps": snap["frames"] / elapsed, "escalated": int(snap["escalated"]), "fused": int(snap["fused"])}


SUBJECTS = {"lenet5": lenet_subject, "mobilenetv2-96": mobilenet_subject(96), "mobilenetv2-224": mobilenet_subject(224)}
HEADLINE = "mobilenetv2-224"  # the standard edge classifier (tens of ms per frame on a Raspberry Pi 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    bundles = cached_litert_bundles(BUNDLES)
    with tempfile.TemporaryDirectory(prefix="hgen-bench-agent-") as folder:
        tmp = Path(folder)
        subjects = {name: make(bundles, tmp, args.frames) for name, make in SUBJECTS.items()}
        rows = [measure(subject, bundles, tmp, args.repeats) for subject in subjects.values()]
        lenet_video = subjects["lenet5"].video
        overhead = overhead_us(bundles, lenet_video, tmp)
        swap = swap_run(bundles, lenet_video, tmp)
        with_hub = hub_run(bundles, lenet_video, tmp)
    head = next(row for row in rows if row["model"] == HEADLINE)
    data = {"agent_fps": head["agent_fps"], "bare_fps": head["bare_fps"], "ratio": head["ratio"],
            "overhead_us": overhead, "swap_pause_ms": swap["swap_pause_ms"], "dropped_frames": swap["dropped_frames"],
            "frames": head["frames"], "headline_model": HEADLINE, "models": rows, "repeats": args.repeats,
            "statistic": "median", "swap": swap, "with_hub_grpc": with_hub,
            "annotators": "simulated crowd (m=3), not people"}
    json_path, md_path = write_results("agent", data, report(data, rows, swap, with_hub, args.repeats))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0


def report(data: dict, rows: list[dict], swap: dict, with_hub: dict, repeats: int) -> str:
    m = machine()
    lenet = next(row for row in rows if row["model"] == "lenet5")
    summary = [{"measure": k, "value": data[k]} for k in ("agent_fps", "bare_fps", "ratio", "overhead_us",
                                                          "swap_pause_ms", "dropped_frames", "frames")]
    columns = ["model", "bare_fps", "naive_fps", "agent_fps", "agent_fps_no_prefetch", "ratio", "ratio_no_prefetch",
               "ratio_to_naive", "inference_ms_p50"]
    return (
        "# Edge agent benchmark\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU, Python {m['python']}. Every fps figure is the median of "
        f"{repeats} runs (the loops taking turns within each repeat) over {data['frames']} frames (MJPG videos written with OpenCV, read back through "
        "cv2.VideoCapture; no camera on this machine). LiteRT float32 bundles, one frame per invoke.\n\n"
        f"## Headline ({HEADLINE}; the issue's fields)\n\n" + markdown_table(summary, ["measure", "value"]) + "\n\n"
        "## Per model\n\n" + markdown_table(rows, columns) + "\n\n"
        "- `bare_fps`: `engine.run` alone on frames decoded and preprocessed beforehand (the issue's reference). "
        "`naive_fps`: a hand-written loop that decodes, preprocesses and invokes one frame after the other. "
        "`agent_fps`: the whole agent (decode on the prefetch thread, preprocess, inference, gate, result objects, "
        "telemetry; no hub), clock started before `Agent.start()`. `agent_fps_no_prefetch`: the same with "
        "`source.prefetch: 0` (decoding on the pipeline thread).\n"
        "- Ratios (target >= 0.9): " + ", ".join(f"{r['model']} {r['ratio']:.3f}" for r in rows) + ". The agent "
        "adds a fixed per-frame cost (preprocessing, confidence, gate, result objects, telemetry: tens of "
        "microseconds of Python, plus cache pressure on the engine), so the ratio depends on how long one invoke "
        f"takes: LeNet-5's invoke takes ~{1e6 / lenet['bare_fps']:.0f} us, less than decoding one frame, so the "
        "target is out of reach for it in a Python agent; MobileNetV2-224 (the headline) is the standard edge "
        "classifier. Both the fixed cost and the invoke scale with the CPU, so the ratios carry over to slower "
        "devices roughly unchanged.\n"
        "- `overhead_us`: per frame, confidence + gate + difficulty/labour + pool offer + fusion (worst case: every "
        "frame escalated), LeNet-5 logits.\n"
        f"- `swap_pause_ms`: time the pipeline holds the lock to switch models between frames (LeNet-5 v1 -> v2); "
        f"loading + health check of v2 took {swap['prepare_ms']:.1f} ms on the swap thread while frames kept flowing. "
        f"`dropped_frames`: frames a live 30 fps camera would have lost during that run ({swap['frames']} frames, "
        f"now on {swap['version_after']}).\n"
        f"- With the gRPC hub and the simulated crowd (simulated annotators), LeNet-5, tau 0.9: {with_hub['fps']:.0f} "
        f"frames/s, {with_hub['escalated']} escalated, {with_hub['fused']} fused (each escalated sample is "
        "committed to SQLite with fsync before its first result is emitted).\n"
        "- The machine is shared (2 cores); absolute fps vary between runs, ratios within one run are comparable.\n")


if __name__ == "__main__":
    sys.exit(main())
