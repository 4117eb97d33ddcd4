"""Phone benchmark (#20): the phone's device mode in headless Chromium against the Python agent on the same frames.

    .venv/bin/python tools/bench/phone.py [--repeats 3] [--fps 30]

Model: LeNet-5 trained briefly on the first 1200 scikit-learn digits (28x28 grey), one signed bundle with its LiteRT
file and its web model (ONNX). Frames: the 397 held-out digits (1400..1796, never trained on), enlarged 2x, as a
`.y4m` (C420) file that Chromium's fake camera plays in a loop (no camera on this machine) and OpenCV reads for the
agent. Per repeat a fresh browser: onboarding link, /device, twice through the video; the phone's frames are matched
to the agent's by their model inputs (smallest RMS), then top-1 and gate decisions are compared. The phone runs
onnxruntime-web's wasm backend with one thread (and, as the second engine, LiteRT.js on the bundle's `.tflite`); the
agent's LiteRT also runs one thread, on the same host.
Bytes on first open: every byte the browser received (DevTools protocol) from the link to streaming (pages, script,
wasm, bundle), with the service worker blocked so that nothing is fetched out of the page's sight. No MQTT (no people) in this run: fps is the page's own pipeline, capped by the camera's frame rate.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import markdown_table, write_results  # noqa: E402

from hgen.hub.kb.store import BundleRecord  # noqa: E402
from hgen.hub.testing.phone import (  # noqa: E402
    agent_frames,
    built_app,
    launch_chromium,
    nearest_frames,
    new_page,
    phone_bundle,
    phone_link,
    write_y4m,
)
from hgen.hub.testing.web import add_people, web_hub  # noqa: E402

BUNDLE = "lenet5-digits"
ENGINES = ("onnxruntime-web", "litert-js")
HELD_OUT = slice(1400, 1797)


def litert_ms(bundle: Any, inputs: np.ndarray, repeats: int = 5) -> float:
    """Median ms of one LiteRT invoke (1 thread) over the held-out inputs, as the agent runs it."""
    from hgen.edge_agent.config import BundleConfig
    from hgen.edge_agent.model import load_model

    model = load_model(bundle.archive, BundleConfig(path=bundle.archive, public_key=bundle.public_key,
                                                    engine_options={"litert": {"num_threads": 1}}))
    try:
        times = []
        for _ in range(repeats):
            for x in inputs:
                start = time.perf_counter()
                model.infer(x[None])
                times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
    finally:
        model.close()


def one_run(bundle: Any, reference: list[Any], workdir: Path, engine: str) -> dict[str, Any]:
    """A fresh hub and browser: first open from the link, then two passes over the video."""
    with web_hub(workdir, phones={"public_key": str(bundle.public_key)}) as hub:
        add_people(hub)
        hub.service.kb.add_bundle(BundleRecord(BUNDLE, "0.1.0", "", bundle.archive.stat().st_size, b"",
                                               str(bundle.archive), 1.0))
        manager, browser = launch_chromium(bundle.video)
        try:
            # service workers blocked: on a first open it would fetch the wasm itself, out of the page's sight
            page, log = new_page(browser.new_context(service_workers="block"))
            received: list[float] = []  # bytes on the wire per finished load (DevTools protocol)
            network = page.context.new_cdp_session(page)
            network.send("Network.enable")
            network.on("Network.loadingFinished", lambda event: received.append(event["encodedDataLength"]))
            page.goto(phone_link(hub, "phone-bench", BUNDLE))
            page.wait_for_url(re.compile(r"/device$"))
            page.wait_for_function("() => window.hgenDevice && (window.hgenDevice.status === 'streaming'"
                                   " || window.hgenDevice.error)", timeout=120_000)
            first_open = int(sum(received))
            page.goto(f"{hub.web_url}/device?record=inputs&engine={engine}")
            want = 2 * len(reference)
            page.wait_for_function(f"() => window.hgenDevice && (window.hgenDevice.frames.length >= {want}"
                                   " || window.hgenDevice.error)", timeout=600_000)
            seen = page.evaluate("window.hgenDevice")
        finally:
            browser.close()
            manager.stop()
    if seen["error"]:
        raise RuntimeError(f"the phone failed: {seen['error']} {log[-5:]}")
    frames = seen["frames"]
    matched, rms = nearest_frames(np.array([f["input"] for f in frames], np.float32), reference)
    done = [f["doneAt"] for f in frames]
    return {
        "engine": engine, "frames": len(frames), "distinct_video_frames_seen": len(set(matched.tolist())),
        "max_match_rms": float(rms.max()),
        "top1_agreement": float(np.mean([f["top1"] == reference[i].top1 for f, i in zip(frames, matched)])),
        "gate_agreement": float(np.mean([f["toPeople"] == reference[i].to_people for f, i in zip(frames, matched)])),
        "dropped_frames": int(seen["dropped"]), "captured_frames": int(seen["captured"]),
        "wasm_ms_p50": statistics.median(f["runMs"] for f in frames),
        "frame_ms_p50": statistics.median(f["inferMs"] for f in frames),
        "fps": (len(done) - 1) / ((done[-1] - done[0]) / 1000.0),
        "first_open_bytes": first_open,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=int, default=60, help="frame rate of the fake camera's video")
    args = parser.parse_args()
    built_app()
    with tempfile.TemporaryDirectory(prefix="hgen-phone-bench-") as tmp:
        folder = Path(tmp)
        bundle = phone_bundle(folder, frames=HELD_OUT.stop - HELD_OUT.start)
        from hgen.edge_agent.testing import digits_28

        images, _ = digits_28()
        write_y4m(bundle.video, images[HELD_OUT], fps=args.fps)
        reference = agent_frames(bundle.video, bundle.archive, bundle.public_key)
        litert = litert_ms(bundle, np.stack([r.input for r in reference]))
        runs = [one_run(bundle, reference, folder / f"run{r}-{engine}", engine)
                for r in range(args.repeats) for engine in ENGINES]
    keys = ("top1_agreement", "gate_agreement", "wasm_ms_p50", "frame_ms_p50", "fps", "first_open_bytes")
    default = [run for run in runs if run["engine"] == ENGINES[0]]
    summary = {key: statistics.median(run[key] for run in default) for key in keys}
    summary["dropped_frames"] = sum(run["dropped_frames"] for run in default)
    summary["litert_ms_p50"] = litert
    second = [run for run in runs if run["engine"] == ENGINES[1]]
    summary["litertjs_ms_p50"] = statistics.median(run["wasm_ms_p50"] for run in second)
    summary["litertjs_top1_agreement"] = statistics.median(run["top1_agreement"] for run in second)
    summary["litertjs_gate_agreement"] = statistics.median(run["gate_agreement"] for run in second)
    summary["litertjs_dropped_frames"] = sum(run["dropped_frames"] for run in second)
    data = {**summary, "repeats": args.repeats, "camera_fps": args.fps, "video_frames": len(reference),
            "model": "lenet5 (digits 28x28 grey), float", "engine": ENGINES[0], "runs": runs,
            "targets": {"top1_agreement": ">= 0.99", "gate_agreement": ">= 0.99", "dropped_frames": "0"}}
    rows = [{"run": i // len(ENGINES) + 1, **{k: run[k] for k in ("engine", *keys, "dropped_frames", "frames")}}
            for i, run in enumerate(runs)]
    met = summary["top1_agreement"] >= 0.99 and summary["gate_agreement"] >= 0.99 and summary["dropped_frames"] == 0
    markdown = "\n".join([
        "# Phone device mode (headless Chromium) vs the Python agent", "",
        "Machine: 2 cores, no GPU; Debian's Chromium headless, onnxruntime-web wasm with 1 thread; the agent's "
        "LiteRT with 1 thread on the same host. No people in this run (nothing SIMULATED is counted).", "",
        f"Model: LeNet-5 briefly trained on digits; frames: the {len(reference)} held-out digits as a {args.fps} "
        "fps `.y4m` (C420) played by Chromium's fake camera, read by OpenCV for the agent; two passes per repeat, "
        f"{args.repeats} repeats, medians. Frames matched to the agent's by model input (RMS).", "",
        markdown_table([{**summary, "verdict": "targets met" if met else "targets NOT met"}],
                       ["top1_agreement", "gate_agreement", "dropped_frames", "wasm_ms_p50", "litert_ms_p50",
                        "frame_ms_p50", "fps", "first_open_bytes", "verdict"]), "",
        "The second browser engine, LiteRT.js (wasm, XNNPack) on the bundle's float `.tflite`:", "",
        markdown_table([summary], ["litertjs_top1_agreement", "litertjs_gate_agreement", "litertjs_dropped_frames",
                                   "litertjs_ms_p50"]), "",
        "Per repeat and engine:", "", markdown_table(rows, ["run", "engine", *keys, "dropped_frames", "frames"]), "",
        "`wasm_ms_p50`: the engine call alone (Chromium's performance.now() is coarsened to 0.1 ms on pages that "
        "are not cross-origin isolated, so sub-millisecond values are +-0.1 ms); `frame_ms_p50`: preprocessing in TypeScript + engine + H-DNN math + "
        f"gate. `fps` is frames answered per second end to end and cannot exceed the camera's {args.fps} fps. "
        "`first_open_bytes`: everything received from the onboarding link to streaming (the wasm of "
        "onnxruntime-web is most of it; the service worker keeps it for later opens); the first open always uses the "
        "default engine, so the litert-js rows repeat it.",
    ])
    write_results("phone", data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
