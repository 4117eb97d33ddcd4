"""Edge agent benchmark: end-to-end frames/s on a video file vs the bare engine invoke loop on the same frames,
per-frame overhead of gating + batching + fusion, the swap pause, and dropped frames during a swap at 30 fps.

    .venv/bin/python tools/bench/agent.py [--frames 600] [--repeats 3]

Model: LeNet-5 trained briefly on scikit-learn digits, lowered to a signed LiteRT float bundle (built once and
cached in tests/artifacts/agent_bundles). Frames: an MJPG video written with OpenCV (no camera on this machine).
The hub run uses the simulated crowd (simulated annotators, not people).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, markdown_table, write_results  # noqa: E402

from hgen.edge_agent.agent import Agent  # noqa: E402
from hgen.edge_agent.config import AgentConfig, BatchingConfig, parse_agent_config  # noqa: E402
from hgen.edge_agent.gating import Batcher, Gate, PendingSample  # noqa: E402
from hgen.edge_agent.model import load_model, preprocess  # noqa: E402
from hgen.compiler.testing import cached_litert_bundles  # noqa: E402
from hgen.edge_agent.testing import digits_28, start_hub, write_video  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def config(tmp: Path, bundles: dict, video: Path, **extra) -> AgentConfig:
    data = {"device_id": "bench-1", "bundle": {"path": str(bundles["v1"]), "public_key": str(bundles["public_key"])},
            "source": {"kind": "video", "uri": str(video)}, "gate": {"audit_share": 0.0},
            "outbox": {"path": str(tmp / f"outbox-{time.perf_counter_ns()}.sqlite")}}
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


def bare_fps(bundles: dict, video: Path, tmp: Path, repeats: int) -> tuple[float, int]:
    """The engine alone, one frame per invoke (as the agent runs), frames decoded and preprocessed beforehand."""
    model = load_model(bundles["v1"], config(tmp, bundles, video).bundle)
    inputs = decoded_inputs(video, model.manifest.input)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            model.engine.run(x[None])
        runs.append(len(inputs) / (time.perf_counter() - start))
    model.close()
    return statistics.median(runs), len(inputs)


def agent_fps(cfg_factory, repeats: int) -> tuple[float, dict]:
    runs, snap = [], {}
    for _ in range(repeats):
        with Agent(cfg_factory()) as agent:
            start = time.perf_counter()
            agent.wait()
            elapsed = time.perf_counter() - start
            snap = agent.telemetry.snapshot()
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
        cfg = config(tmp, bundles, video, gate={"tau": 0.9}, hub={"url": hub.grpc_url},
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    bundles = cached_litert_bundles(REPO / "tests" / "artifacts" / "agent_bundles")
    with tempfile.TemporaryDirectory(prefix="hgen-bench-agent-") as folder:
        tmp = Path(folder)
        images, _ = digits_28(300)
        video = write_video(tmp / "digits.avi", args.frames, images=images)
        bare, frames = bare_fps(bundles, video, tmp, args.repeats)
        standalone, snap = agent_fps(lambda: config(tmp, bundles, video, gate={"tau": 0.0}), args.repeats)
        overhead = overhead_us(bundles, video, tmp)
        swap = swap_run(bundles, video, tmp)
        with_hub = hub_run(bundles, video, tmp)
    data = {"agent_fps": standalone, "bare_fps": bare, "ratio": standalone / bare, "overhead_us": overhead,
            "swap_pause_ms": swap["swap_pause_ms"], "dropped_frames": swap["dropped_frames"], "frames": frames,
            "repeats": args.repeats, "statistic": "median", "inference_ms_p50": snap["inference_ms_p50"],
            "inference_ms_p99": snap["inference_ms_p99"], "swap": swap, "with_hub_grpc": with_hub,
            "model": "LeNet-5 (digits), LiteRT float32, batch 1", "video": f"MJPG 28x28, {frames} frames",
            "annotators": "simulated crowd (m=3), not people"}
    rows = [{"measure": k, "value": data[k]} for k in ("agent_fps", "bare_fps", "ratio", "overhead_us",
                                                       "swap_pause_ms", "dropped_frames", "frames")]
    m = machine()
    markdown = (
        "# Edge agent benchmark\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. Median of {args.repeats} runs over "
        f"{frames} frames (MJPG video written with OpenCV, read back through cv2.VideoCapture). Model: LeNet-5 on "
        "digits, LiteRT float32 bundle, one frame per invoke.\n\n"
        + markdown_table(rows, ["measure", "value"]) + "\n\n"
        "- `agent_fps`: the whole agent (decode, preprocess, inference, gate, results) on the video, no hub; "
        "`bare_fps`: `engine.run` alone on the same preprocessed frames.\n"
        "- `overhead_us`: per frame, confidence + gate + difficulty/labour + pool offer + fusion (worst case: every "
        "frame escalated).\n"
        f"- `swap_pause_ms`: time the pipeline holds the lock to switch models between frames; loading + health "
        f"check of v2 took {swap['prepare_ms']:.1f} ms on the swap thread while frames kept flowing. "
        f"`dropped_frames`: frames a live 30 fps camera would have lost during that run ({swap['frames']} frames, "
        f"now on {swap['version_after']}).\n"
        f"- With the gRPC hub and the simulated crowd (simulated annotators), tau 0.9: {with_hub['fps']:.0f} "
        f"frames/s, {with_hub['escalated']} escalated, {with_hub['fused']} fused (each escalated sample is "
        "committed to SQLite with fsync before it is sent).\n"
        "- LeNet-5 runs in tens of microseconds, so per-frame costs outside the engine (video decoding, "
        "preprocessing, result objects) dominate and the ratio is far below the 0.9 target; with a model that "
        "takes milliseconds per frame the same fixed overhead is a small share.\n")
    json_path, md_path = write_results("agent", data, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
