"""Phone benchmark (#20): the phone's device mode in headless Chromium against the Python agent on the same frames.

    .venv/bin/python tools/bench/phone.py [--repeats 3] [--fps 30]

Models: LeNet-5 trained briefly on the first 1200 scikit-learn digits (28x28 grey), and MobileNetV2 at 96x96 RGB with
random weights (a realistic phone model's compute; its answers mean nothing, so its agreement is a harsh numerical
check), each one signed bundle with its LiteRT file and both web models (ONNX, .tflite). Frames: the 397 held-out
digits (1400..1796, never trained on), enlarged 2x (LeNet-5) or 4x (MobileNetV2), as a `.y4m` (C420) file that Chromium's fake camera plays in a loop (no camera on this machine) and OpenCV reads for the
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
from benchlib import calibrate_batch_norm, markdown_table, write_results  # noqa: E402

from hgen.hub.kb.store import BundleRecord  # noqa: E402
from hgen.hub.testing.phone import (  # noqa: E402
    PhoneBundle,
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


def mobilenet_bundle(lenet: PhoneBundle, folder: Path, fps: int) -> PhoneBundle:
    """MobileNetV2 at 96x96 RGB with random weights (BatchNorm statistics from one noise batch): the compute of a
    realistic phone model, whose answers mean nothing; the same held-out digits enlarged 4x (112x112 frames, so
    the page shrinks them with the area filter) as grey video."""
    import keras

    from hgen.compiler.bundle import pack_bundle, write_bundle
    from hgen.edge_agent.testing import digits_28

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10,
                                           classifier_activation=None)
    noise = np.random.default_rng(0).uniform(-1, 1, (64, 96, 96, 3)).astype(np.float32)
    calibrate_batch_norm(model, noise)
    out = folder / "mobilenet"
    write_bundle(out, model, name=BUNDLE, version="0.1.0", kind="cnn", target="x86_64",
                 labels=[str(i) for i in range(10)], input_spec={"scale": 1 / 127.5, "offset": -1.0}, tau=0.9,
                 temperature=1.0, fusion_lambda=0.4, confidence_params={"m": 3.0}, representative_data=noise,
                 engines=("litert",), web=ENGINES, signing_key=lenet.private_key, overwrite=True)
    images, _ = digits_28()
    video = write_y4m(folder / "held_out_112.y4m", images[HELD_OUT], scale=4, fps=fps)
    archive = pack_bundle(out)
    return PhoneBundle(archive, archive, lenet.public_key, lenet.private_key, video, folder, len(images[HELD_OUT]))


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


KEYS = ("top1_agreement", "gate_agreement", "wasm_ms_p50", "frame_ms_p50", "fps", "first_open_bytes")
MODELS = {"lenet5": "LeNet-5 briefly trained on the first 1200 digits (28x28 grey), float",
          "mobilenetv2-96": "MobileNetV2 96x96 RGB, random weights (speed only; its answers mean nothing), float"}


def verdict(summary: dict[str, Any]) -> str:
    met = summary["top1_agreement"] >= 0.99 and summary["gate_agreement"] >= 0.99 and summary["dropped_frames"] == 0
    return "targets met" if met else "targets NOT met"


def measure(name: str, bundle: PhoneBundle, folder: Path, repeats: int) -> dict[str, Any]:
    """The agent's reference and LiteRT time, then `repeats` browser runs per engine; medians."""
    reference = agent_frames(bundle.video, bundle.archive, bundle.public_key)
    litert = litert_ms(bundle, np.stack([r.input for r in reference]))
    runs = [one_run(bundle, reference, folder / f"{name}-run{r}-{engine}", engine)
            for r in range(repeats) for engine in ENGINES]
    default = [run for run in runs if run["engine"] == ENGINES[0]]
    summary: dict[str, Any] = {key: statistics.median(run[key] for run in default) for key in KEYS}
    summary["dropped_frames"] = sum(run["dropped_frames"] for run in default)
    summary["litert_ms_p50"] = litert
    second = [run for run in runs if run["engine"] == ENGINES[1]]
    summary["litertjs_ms_p50"] = statistics.median(run["wasm_ms_p50"] for run in second)
    summary["litertjs_top1_agreement"] = statistics.median(run["top1_agreement"] for run in second)
    summary["litertjs_gate_agreement"] = statistics.median(run["gate_agreement"] for run in second)
    summary["litertjs_dropped_frames"] = sum(run["dropped_frames"] for run in second)
    return {"summary": summary, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=int, default=60, help="frame rate of the fake camera's video")
    args = parser.parse_args()
    built_app()
    with tempfile.TemporaryDirectory(prefix="hgen-phone-bench-") as tmp:
        folder = Path(tmp)
        lenet = phone_bundle(folder, frames=HELD_OUT.stop - HELD_OUT.start)
        from hgen.edge_agent.testing import digits_28

        images, _ = digits_28()
        write_y4m(lenet.video, images[HELD_OUT], fps=args.fps)
        subjects = {"lenet5": lenet, "mobilenetv2-96": mobilenet_bundle(lenet, folder, args.fps)}
        results = {name: measure(name, bundle, folder, args.repeats) for name, bundle in subjects.items()}
    data = {**results["lenet5"]["summary"], "repeats": args.repeats, "camera_fps": args.fps,
            "video_frames": HELD_OUT.stop - HELD_OUT.start, "model": MODELS["lenet5"], "engine": ENGINES[0],
            "targets": {"top1_agreement": ">= 0.99", "gate_agreement": ">= 0.99", "dropped_frames": "0"},
            "models": {name: {"description": MODELS[name], **result} for name, result in results.items()}}
    summary_rows = [{"model": name, **result["summary"], "verdict": verdict(result["summary"])}
                    for name, result in results.items()]
    rows = [{"model": name, "run": i // len(ENGINES) + 1, **{k: run[k] for k in ("engine", *KEYS, "dropped_frames",
                                                                               "frames")}}
            for name, result in results.items() for i, run in enumerate(result["runs"])]
    markdown = "\n".join([
        "# Phone device mode (headless Chromium) vs the Python agent", "",
        "Machine: 2 cores, no GPU; Debian's Chromium headless, onnxruntime-web wasm with 1 thread; the agent's "
        "LiteRT with 1 thread on the same host. No people in this run (nothing SIMULATED is counted). The top-level "
        "JSON keys are LeNet-5's (the model the tests use); MobileNetV2 is in `models`.", "",
        f"Frames: the {HELD_OUT.stop - HELD_OUT.start} held-out digits as a {args.fps} fps `.y4m` (C420) played by "
        "Chromium's fake camera and read by OpenCV for the agent (LeNet-5: 56x56 frames, 2x; MobileNetV2: 112x112, "
        f"4x); two passes per repeat, {args.repeats} repeats, medians. Phone frames are matched to the agent's by "
        "model input (RMS). " + "; ".join(f"{name}: {desc}" for name, desc in MODELS.items()) + ".", "",
        markdown_table(summary_rows, ["model", "top1_agreement", "gate_agreement", "dropped_frames", "wasm_ms_p50",
                                      "litert_ms_p50", "frame_ms_p50", "fps", "first_open_bytes", "verdict"]), "",
        "The second browser engine, LiteRT.js (wasm, XNNPack) on the bundle's float `.tflite`:", "",
        markdown_table(summary_rows, ["model", "litertjs_top1_agreement", "litertjs_gate_agreement",
                                      "litertjs_dropped_frames", "litertjs_ms_p50"]), "",
        "Per repeat and engine:", "", markdown_table(rows, ["model", "run", "engine", *KEYS, "dropped_frames",
                                                           "frames"]), "",
        "`wasm_ms_p50`: the engine call alone (Chromium's performance.now() is coarsened to 0.1 ms on pages that "
        "are not cross-origin isolated, so sub-millisecond values are +-0.1 ms); `frame_ms_p50`: preprocessing in "
        "TypeScript + engine + H-DNN math + gate. `fps` is frames answered per second end to end and cannot exceed "
        f"the camera's {args.fps} fps. `first_open_bytes`: everything received from the onboarding link to "
        "streaming (the wasm of onnxruntime-web is most of it; the service worker keeps it for later opens); the "
        "first open always uses the default engine, so the litert-js rows repeat it.", "",
        "MobileNetV2 with random weights is a stress test of numerical agreement, not a model anyone deploys: its "
        "logits are near ties, so input differences below one grey level (Chromium's and OpenCV's YUV decoding of "
        "the same file, and the TypeScript area filter, 98.5 % bit-identical to OpenCV's on non-integer ratios in the "
        "golden vectors) flip its top-1. Both browser engines agree with the agent equally often, so the engines are "
        "not the cause. Where its top-1 agreement is below 0.99 the target is NOT reached for it; its gate "
        "agreement does not show how many frames were near tau. A trained model of that size was not measured.",
    ])
    write_results("phone", data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
