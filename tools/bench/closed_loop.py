"""Closed-loop benchmark (issue 7): a simulated device streams D5 test images to the hub, the simulated crowd
answers, the hub retrains at the threshold, re-lowers, signs and publishes; after each retrain the device model's
accuracy is measured on a held-out D5 split.

D5 = fashion-mnist:lowres. The deployed model is what `hgen demo` (`make demo-same-field`) deploys: hgen-compile's
H-CNN for the phone profile (search, fine-tune, calibration, signed bundle; its tau is the search's). The test split
is cut in two: a stream (sent by the device, never used in training) and a held-out evaluation split (the last
2,000 test images, never streamed, never trained on). Each round the device runs the current model on the next
stream images, sends the ones under tau (the runtime's gate) over real gRPC, and the hub's retrain worker triggers
by itself when `threshold` new human labels exist. Round 0 is the model before any retrain. Annotators are
SIMULATED (m=3, accuracy 0.9) everywhere: labels, fused accuracy and labour.

Run: .venv/bin/python tools/bench/closed_loop.py [--rounds 3] [--threshold 200] [--device phone]
Writes tools/bench/results/closed_loop.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, labels_short, machine, markdown_table, write_results  # noqa: E402

from hgen.compiler.data import Split, load_dataset  # noqa: E402
from hgen.compiler.demo import compile_stage, demo_config, with_preset  # noqa: E402
from hgen.compiler.metrics import hdnn  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import predict_logits  # noqa: E402
from hgen.hub.app import HubApp  # noqa: E402
from hgen.hub.config import parse_hub_config  # noqa: E402
from hgen.hub.crowd import SimulatedCrowd  # noqa: E402
from hgen.hub.testing.crowd import CrowdDriver  # noqa: E402
from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll  # noqa: E402
from hgen.hub.testing.models import DeployedModel, deploy_compiled, retrain_section  # noqa: E402
from hgen.hub.testing.samples import grey_sample, make_request  # noqa: E402
from hgen.hub.testing.services import free_port  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE, M, ACCURACY, CHUNK, DATASET, HELD_OUT = "d5-cam", 3, 0.9, 250, "fashion-mnist:lowres", 2000


def evaluate(keras_path: str, temperature: float, tau: float, held: Split, crowd_seed: int) -> dict[str, float]:
    """Model-only and fused accuracy, share to people and labour (Eq. 13) on the held-out split, simulated crowd."""
    logits = predict_logits(load_model_file(keras_path), held.x)
    crowd = SimulatedCrowd.uniform(M, ACCURACY, 10, seed=crowd_seed)
    answers = hdnn.ask_crowd(crowd, logits, held.y, M, temperature)
    result = hdnn.evaluate_hdnn(logits, held.y, answers, tau=tau, temperature=temperature)
    return {"accuracy_model_only": result.accuracy_model, "accuracy_fused": result.accuracy_fused,
            "share_to_people": result.share_to_people, "labour": result.labour}


class Stream:
    """The device: runs the current model, sends what falls under tau, counts what it sent."""

    def __init__(self, app: HubApp, stream: Split, deployed: DeployedModel) -> None:
        self.app, self.stream, self.deployed = app, stream, deployed
        self.position = 0
        self.oracle: dict[str, int] = {}  # sample id -> true class: what the simulated people "see"
        self.log = ReplyLog()
        self.device = GrpcDevice(f"127.0.0.1:{app.transport(GrpcTransport).port}", self.log, call_timeout_s=300,
                                 token=enroll(app, DEVICE)[DEVICE].bearer)

    def send_until(self, labels: int, version: str, keras_path: str, temperature: float, tau: float) -> dict[str, int]:
        """Stream chunks until `labels` samples went to people; returns images seen and sent."""
        model = load_model_file(keras_path)
        seen = sent = 0
        while sent < labels:
            if self.position >= len(self.stream):
                raise RuntimeError("the D5 stream ran out before the retrain threshold was reached")
            x = self.stream.x[self.position:self.position + CHUNK]
            self.position += len(x)
            probs = softmax(predict_logits(model, x), temperature)
            gated = np.flatnonzero(probs.max(axis=1) < tau)[: labels - sent]
            seen += len(x)
            if len(gated):
                samples = [grey_sample(DEVICE, x[i], probs[i], self.deployed.name, version) for i in gated]
                for i, s in zip(gated, samples):
                    self.oracle[s.sample_id] = int(self.stream.y[self.position - len(x) + i])
                self.device.submit_until_replied(make_request(DEVICE, samples, m=M))
                sent += len(samples)
        return {"stream_images": seen, "sent_to_people": sent}


def deploy(work: Path, device: str) -> tuple[DeployedModel, dict[str, Any]]:
    """Compile the D5 H-CNN exactly as `hgen demo` does (the demo's search settings) and deploy it."""
    settings = with_preset(demo_config(dataset=DATASET, device=device, engines=("litert",), out=str(work)),
                           "fashion-mnist")
    compiled = compile_stage(settings, DATASET, work, log=lambda message: print(message, flush=True))
    data = load_dataset(DATASET, seed=settings.seed, limit=settings.limit)  # the compile's own splits
    final = compiled.summary["final"]
    return deploy_compiled(compiled, data), {"device": device, "plan": compiled.summary["plan"],
                                             "accuracy_demand": settings.demands.accuracy,
                                             "accuracy_model_only_test": final["accuracy_model_only"],
                                             "accuracy_fused_test": final["accuracy"]}


def run(rounds: int, threshold: int, device_profile: str, tolerances: list[float], work: Path) -> dict[str, Any]:
    """Compile and deploy once; then one closed loop per acceptance tolerance, each on a fresh hub and stream."""
    deployed, compiled = deploy(work, device_profile)
    test = deployed.data.test
    stream = Split(test.x[:-HELD_OUT], test.y[:-HELD_OUT])
    held = Split(test.x[-HELD_OUT:], test.y[-HELD_OUT:])
    runs = [{"tolerance": tolerance,
             "rounds": loop(deployed, stream, held, rounds, threshold, tolerance, compiled["accuracy_demand"],
                            work / f"hub-{tolerance}")}
            for tolerance in tolerances]
    return {"dataset": "fashion-mnist:lowres (D5)", "annotators": f"simulated, m={M}, accuracy {ACCURACY}",
            "threshold": threshold, "tau": deployed.tau, "deployed": compiled, "stream_size": len(stream),
            "held_out_size": len(held), "rounds": runs[0]["rounds"], "tolerance": tolerances[0], "runs": runs}


def loop(deployed: DeployedModel, stream: Split, held: Split, rounds: int, threshold: int, tolerance: float,
         demand: float, work: Path) -> list[dict[str, Any]]:
    work.mkdir(parents=True)
    section = retrain_section(deployed, work / "models", devices={DEVICE: "x86_64"}, threshold=threshold,
                              dataset=DATASET, original_samples=20000, human_repeat=10, epochs=2, min_holdout=10,
                              tolerance=tolerance)
    section["models"][0]["accuracy_demand"] = demand  # the compile's A: fewer people may be asked down to it
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{work / 'hub.db'}"},
                               "grpc": {"port": free_port()}, "retrain": section})
    app = HubApp(config).start()
    device = Stream(app, stream, deployed)
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(M, ACCURACY, 10, seed=7),
                        lambda sample_id: device.oracle[sample_id]).start()
    rows: list[dict[str, Any]] = []
    try:
        current = app.pipeline.current(deployed.name)
        base = evaluate(current.keras_path, current.temperature, current.tau, held, 0)
        rows.append({"round": 0, "model_version": current.version, "status": "deployed", **base,
                     "labour_ratio_held_out": base.pop("labour"), "labour": 0.0, "retrain_seconds": 0.0, "filtered_out": 0, "human_samples_used": 0,
                     "stream_images": 0, "sent_to_people": 0})
        last_run = 0
        for r in range(1, rounds + 1):
            before = app.service.kb.labour_of_device(DEVICE)[0]
            sent = device.send_until(threshold, current.version, current.keras_path, current.temperature, current.tau)
            while (short := labels_short(app, deployed.name, threshold, last_run)) > 0:  # doubtful replies: no labels
                more = device.send_until(short, current.version, current.keras_path, current.temperature, current.tau)
                sent = {key: sent[key] + more[key] for key in sent}
            finished = app.retrain.wait_for_run(deployed.name, last_run, timeout=1800)
            last_run = finished.id
            current = app.pipeline.current(deployed.name)
            spent = app.service.kb.labour_of_device(DEVICE)[0] - before
            measured = evaluate(current.keras_path, current.temperature, current.tau, held, r)
            acceptance = finished.metrics.get("acceptance", {})
            rows.append({"round": r, "model_version": current.version, "status": finished.status, **measured,
                         "labour_ratio_held_out": measured.pop("labour"), "labour": spent,
                         "retrain_seconds": finished.seconds or 0.0, "filtered_out": finished.filtered_out,
                         "human_samples_used": finished.samples_used, **sent,
                         "expected_fused_current": acceptance.get("current_fused_test"),
                         "expected_fused_new": acceptance.get("new_fused_test"), "why": finished.error or ""})
            print(f"tolerance {tolerance} round {r}: {finished.status} v{current.version} "
                  f"acc {measured['accuracy_model_only']:.4f} "
                  f"fused {measured['accuracy_fused']:.4f} share {measured['share_to_people']:.3f} "
                  f"retrain {finished.seconds:.1f} s", flush=True)
    finally:
        crowd.stop()
        device.device.close()
        app.stop()
    return rows


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(6.4, 4.0))
    right = left.twinx()
    for run, style in zip(result["runs"], ("-", ":")):
        rows, tag = run["rounds"], f"tol {run['tolerance']}"
        rounds = [r["round"] for r in rows]
        left.plot(rounds, [r["accuracy_model_only"] for r in rows], "o" + style, color="tab:blue",
                  label=f"model only ({tag})")
        left.plot(rounds, [r["accuracy_fused"] for r in rows], "s" + style, color="tab:green",
                  label=f"fused, simulated people ({tag})")
        right.plot(rounds, [r["share_to_people"] for r in rows], "d" + style, color="tab:red",
                   label=f"share to people ({tag})")
        left.set_xticks(rounds)
    left.set_xlabel("retrain round (0 = deployed model)")
    left.set_ylabel("accuracy on held-out D5")
    right.set_ylabel("share of samples sent to people")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    left.set_title("Closed loop on D5 (simulated annotators)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict[str, Any], wall: float) -> str:
    columns = ["round", "model_version", "status", "accuracy_model_only", "accuracy_fused", "share_to_people",
               "labour", "labour_ratio_held_out", "retrain_seconds", "filtered_out", "human_samples_used",
               "sent_to_people", "expected_fused_current", "expected_fused_new", "why"]
    m = machine()
    return "\n".join([
        "# Closed loop on D5 (fashion-mnist:lowres) — annotators SIMULATED", "",
        f"Measured on {m['cpu']} ({m['cores']} cores, no GPU), one run (each round is one retrain; no repeats, "
        f"so no median), total wall time {wall:.0f} s. Hub in-process (SQLite, real gRPC), simulated crowd m={M}, "
        f"accuracy {ACCURACY}; retrain threshold {result['threshold']} human labels. Deployed model: hgen-compile's "
        f"H-CNN for the {result['deployed']['device']} profile with the demo's search settings (plan "
        f"{result['deployed']['plan']}, tau {result['tau']:.3f}; on the full test split model-only "
        f"{result['deployed']['accuracy_model_only_test']:.4f}, fused {result['deployed']['accuracy_fused_test']:.4f}).",
        "",
        "accuracy_* and share_to_people: the device model (and the H-DNN with simulated people) on "
        f"{result['held_out_size']} held-out D5 test images never streamed nor trained on. labour: L0 (Eq. 3) the "
        "hub charged for the round's samples (simulated people); labour_ratio_held_out: Eq. 13 on the held-out "
        "split. filtered_out: human-labelled samples the autoencoder left out. status: published, or rejected by "
        "the acceptance check (then the version does not change). expected_fused_*: the acceptance check's estimate "
        "of accuracy with people on the original test split (runtime gate at the model's tau; people right with "
        "retrain.human_accuracy = 0.95), deployed vs retrained model; a retrain must not lower it below "
        f"min(current, the accuracy demand {result['deployed']['accuracy_demand']}) minus the tolerance. The "
        "hub's acceptance test split leaves out "
        "images people labelled (here: the streamed test images), so a model is never judged on its own training "
        "images. Each tolerance is its own closed loop (fresh hub, the same stream and crowd seed) from the "
        "same deployed model; 0.005 is about the standard error of an accuracy on the test split.", "",
        reading(result["runs"]), "",
        *[line for run in result["runs"] for line in (
            f"## Acceptance tolerance {run['tolerance']}" + (" (the hub's default)" if run["tolerance"] == 0 else
                                                              " (the JSON's `rounds`; `make demo` uses it)"),
            "", markdown_table(run["rounds"], columns), "")],
        "![closed loop](closed_loop.png)", ""])


def reading(runs: list[dict[str, Any]]) -> str:
    """One sentence per loop: where it started, where it ended, how many retrains were published."""
    lines = []
    for run in runs:
        first, last = run["rounds"][0], run["rounds"][-1]
        published = sum(r["status"] == "published" for r in run["rounds"])
        lines.append(
            f"- tolerance {run['tolerance']}: {published} of {len(run['rounds']) - 1} retrains published; held-out "
            f"model-only {first['accuracy_model_only']:.4f} -> {last['accuracy_model_only']:.4f}, fused "
            f"{first['accuracy_fused']:.4f} -> {last['accuracy_fused']:.4f}, share to people "
            f"{first['share_to_people']:.4f} -> {last['share_to_people']:.4f}, labour ratio "
            f"{first['labour_ratio_held_out']:.4f} -> {last['labour_ratio_held_out']:.4f}.")
    return "\n".join(["Reading (2,000 held-out images: an accuracy's standard error is about 0.007):", *lines,
                      "- Enhancement from a few hundred human labels gains little on this compiled model "
                      "(tools/bench/results/enhance_probe.md: ~490 labels of gated images; over this session's runs "
                      "held-out gated accuracy moved -2 to +2 points on ~110 images, test accuracy 0 to +0.7 "
                      "points), while the held-out human "
                      "set the acceptance check sees per round holds 40-50 samples, whose accuracy moves by several "
                      "points either way: most retrains are refused, and a published one mostly changes how many "
                      "samples go to people."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=200)
    parser.add_argument("--device", default="phone", help="device profile the deployed model is compiled for")
    parser.add_argument("--tolerances", default="0.005,0.0",
                        help="acceptance tolerances, one closed loop each (the first fills the JSON's `rounds`)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hgen-closed-loop-") as tmp:
        result = run(args.rounds, args.threshold, args.device, [float(t) for t in args.tolerances.split(",")],
                     Path(tmp))
    wall = time.perf_counter() - start
    result["wall_seconds"] = wall
    plot(result, RESULTS / "closed_loop.png")
    json_path, md_path = write_results("closed_loop", result, markdown(result, wall))
    print(f"wrote {json_path}, {md_path}, {RESULTS / 'closed_loop.png'} in {wall:.0f} s")


if __name__ == "__main__":
    main()
