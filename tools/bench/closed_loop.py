"""Closed-loop benchmark (issue 7): a simulated device streams D5 test images to the hub, the simulated crowd
answers, the hub retrains at the threshold, re-lowers, signs and publishes; after each retrain the device model's
accuracy is measured on a held-out D5 split.

D5 = fashion-mnist:lowres. The deployed model is LeNet-5 trained briefly on part of the training split (a model
with room to learn, as a freshly deployed one). The test split is cut in two: a stream (sent by the device, never
used in training) and a held-out evaluation split (never streamed, never trained on). Each round the device runs
the current model on the next stream images, sends the ones under tau (the runtime's gate) over real gRPC, and
the hub's retrain worker triggers by itself when `threshold` new human labels exist. Round 0 is the model before
any retrain. Annotators are SIMULATED (m=3, accuracy 0.9) everywhere: labels, fused accuracy and labour.

Run: .venv/bin/python tools/bench/closed_loop.py [--rounds 3] [--threshold 200]
Writes tools/bench/results/closed_loop.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, machine, markdown_table, write_results  # noqa: E402

from hgen.compiler.data import Split  # noqa: E402
from hgen.compiler.metrics import hdnn  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import predict_logits  # noqa: E402
from hgen.hub.app import HubApp  # noqa: E402
from hgen.hub.config import parse_hub_config  # noqa: E402
from hgen.hub.crowd import SimulatedCrowd  # noqa: E402
from hgen.hub.testing.crowd import CrowdDriver  # noqa: E402
from hgen.hub.testing.device import GrpcDevice, ReplyLog  # noqa: E402
from hgen.hub.testing.models import DeployedModel, deploy_lenet, retrain_section  # noqa: E402
from hgen.hub.testing.samples import make_request  # noqa: E402
from hgen.hub.testing.services import free_port  # noqa: E402
from hgen.protos import hub_pb2  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402

DEVICE, M, ACCURACY, CHUNK = "d5-cam", 3, 0.9, 250


def to_sample(x: np.ndarray, probs: np.ndarray, version: str) -> hub_pb2.Sample:
    ok, png = cv2.imencode(".png", np.clip(x[:, :, 0] * 255.0, 0, 255).astype(np.uint8))
    assert ok
    return hub_pb2.Sample(sample_id=str(uuid.uuid4()), device_id=DEVICE, bundle_name="lenet5", bundle_version=version,
                          image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=x.shape[0],
                                              width=x.shape[1], channels=1),
                          output=hub_pb2.ModelOutput(class_probabilities=probs.tolist(), confidence=float(probs.max()),
                                                     kind=hub_pb2.HDNN_KIND_CNN))


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
        self.device = GrpcDevice(f"127.0.0.1:{app.grpc_port}", self.log, call_timeout_s=300)

    def send_until(self, labels: int, version: str, keras_path: str, temperature: float) -> dict[str, int]:
        """Stream chunks until `labels` samples went to people; returns images seen and sent."""
        model = load_model_file(keras_path)
        seen = sent = 0
        while sent < labels:
            if self.position >= len(self.stream):
                raise RuntimeError("the D5 stream ran out before the retrain threshold was reached")
            x = self.stream.x[self.position:self.position + CHUNK]
            self.position += len(x)
            probs = softmax(predict_logits(model, x), temperature)
            gated = np.flatnonzero(probs.max(axis=1) < self.deployed.tau)[: labels - sent]
            seen += len(x)
            if len(gated):
                samples = [to_sample(x[i], probs[i], version) for i in gated]
                for i, s in zip(gated, samples):
                    self.oracle[s.sample_id] = int(self.stream.y[self.position - len(x) + i])
                self.device.submit_until_replied(make_request(DEVICE, samples, m=M))
                sent += len(samples)
        return {"stream_images": seen, "sent_to_people": sent}


def run(rounds: int, threshold: int, train_samples: int, epochs: int, work: Path) -> dict[str, Any]:
    deployed = deploy_lenet(work / "deployed", dataset="fashion-mnist:lowres", epochs=epochs,
                            train_samples=train_samples, tau=0.8)
    test = deployed.data.test
    half = len(test) // 2
    stream, held = Split(test.x[:half], test.y[:half]), Split(test.x[half:half + 2000], test.y[half:half + 2000])
    config = parse_hub_config({
        "devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{work / 'hub.db'}"}, "grpc": {"port": free_port()},
        "retrain": retrain_section(deployed, work / "models", devices={DEVICE: "x86_64"}, threshold=threshold,
                                   dataset="fashion-mnist:lowres", original_samples=4000, epochs=2, min_holdout=10)})
    app = HubApp(config).start()
    device = Stream(app, stream, deployed)
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(M, ACCURACY, 10, seed=7),
                        lambda sample_id: device.oracle[sample_id]).start()
    rows: list[dict[str, Any]] = []
    try:
        current = app.retrain.pipeline.current("lenet5")
        base = evaluate(current.keras_path, current.temperature, deployed.tau, held, 0)
        rows.append({"round": 0, "model_version": current.version, "status": "deployed", **base,
                     "labour_ratio_held_out": base.pop("labour"), "labour": 0.0, "retrain_seconds": 0.0, "filtered_out": 0, "human_samples_used": 0,
                     "stream_images": 0, "sent_to_people": 0})
        last_run = 0
        for r in range(1, rounds + 1):
            before = app.service.kb.labour_of_device(DEVICE)[0]
            sent = device.send_until(threshold, current.version, current.keras_path, current.temperature)
            finished = app.retrain.wait_for_run("lenet5", last_run, timeout=1800)
            last_run = finished.id
            current = app.retrain.pipeline.current("lenet5")
            spent = app.service.kb.labour_of_device(DEVICE)[0] - before
            measured = evaluate(current.keras_path, current.temperature, deployed.tau, held, r)
            rows.append({"round": r, "model_version": current.version, "status": finished.status, **measured,
                         "labour_ratio_held_out": measured.pop("labour"), "labour": spent,
                         "retrain_seconds": finished.seconds or 0.0, "filtered_out": finished.filtered_out,
                         "human_samples_used": finished.samples_used, **sent, "why": finished.error or ""})
            print(f"round {r}: {finished.status} v{current.version} acc {measured['accuracy_model_only']:.4f} "
                  f"fused {measured['accuracy_fused']:.4f} share {measured['share_to_people']:.3f} "
                  f"retrain {finished.seconds:.1f} s", flush=True)
    finally:
        crowd.stop()
        device.device.close()
        app.stop()
    return {"dataset": "fashion-mnist:lowres (D5)", "annotators": f"simulated, m={M}, accuracy {ACCURACY}",
            "threshold": threshold, "tau": deployed.tau, "deployed_train_samples": train_samples,
            "deployed_epochs": epochs, "stream_size": len(stream), "held_out_size": len(held), "rounds": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in result["rounds"]]
    fig, left = plt.subplots(figsize=(6.4, 4.0))
    left.plot(rounds, [r["accuracy_model_only"] for r in result["rounds"]], "o-", label="model only")
    left.plot(rounds, [r["accuracy_fused"] for r in result["rounds"]], "s-", label="fused (simulated people)")
    left.set_xlabel("retrain round (0 = deployed model)")
    left.set_ylabel("accuracy on held-out D5")
    left.set_xticks(rounds)
    right = left.twinx()
    right.plot(rounds, [r["share_to_people"] for r in result["rounds"]], "d--", color="tab:red", label="share to people")
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
               "sent_to_people", "why"]
    m = machine()
    return "\n".join([
        "# Closed loop on D5 (fashion-mnist:lowres) — annotators SIMULATED", "",
        f"Measured on {m['cpu']} ({m['cores']} cores, no GPU), one run (each round is one retrain; no repeats, "
        f"so no median), total wall time {wall:.0f} s. Hub in-process (SQLite, real gRPC), simulated crowd m={M}, "
        f"accuracy {ACCURACY}; retrain threshold {result['threshold']} human labels; tau {result['tau']}.", "",
        "accuracy_* and share_to_people: the device model (and the H-DNN with simulated people) on "
        f"{result['held_out_size']} held-out D5 test images never streamed nor trained on. labour: L0 (Eq. 3) the "
        "hub charged for the round's samples (simulated people); labour_ratio_held_out: Eq. 13 on the held-out "
        "split. filtered_out: human-labelled samples the autoencoder left out. status: published, or rejected by "
        "the acceptance check (then the version does not change).", "",
        markdown_table(result["rounds"], columns), "",
        "![closed loop](closed_loop.png)", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=200)
    parser.add_argument("--train-samples", type=int, default=3000, help="training images of the deployed model")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the deployed model")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hgen-closed-loop-") as tmp:
        result = run(args.rounds, args.threshold, args.train_samples, args.epochs, Path(tmp))
    wall = time.perf_counter() - start
    result["wall_seconds"] = wall
    plot(result, RESULTS / "closed_loop.png")
    json_path, md_path = write_results("closed_loop", result, markdown(result, wall))
    print(f"wrote {json_path}, {md_path}, {RESULTS / 'closed_loop.png'} in {wall:.0f} s")


if __name__ == "__main__":
    main()
