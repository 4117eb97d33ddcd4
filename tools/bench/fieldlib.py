"""The field-shift benchmark's device side (tools/bench/field_shift.py): what the device sends to people, and the
held-out measurement, both as the edge agent behaves with the compile's labour demand enforced
(`batching.labour_share`, `edge_agent.gating.LabourBucket`: refilled per frame, starting empty, capacity 1,000 frames
of refill; a frame under tau that does not fit keeps the model's answer). Also the colour data set the third
scenario reads through the `folder` format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hgen.compiler.data import Split, load_dataset
from hgen.compiler.metrics import hdnn
from hgen.compiler.models import load_model_file
from hgen.compiler.train import predict_logits
from hgen.edge_agent.gating import LabourBucket
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll
from hgen.hub.testing.samples import grey_sample, make_request
from hgen.protos import hub_pb2
from hgen.runtime.calibration import softmax
from hgen.runtime.familiarity import UNFAMILIAR_SHARE, Familiarity, asked_unfamiliar, unfamiliar_frames
from hgen.runtime.hdnn import DEFAULT_KIND, FUSION_LAMBDA_DEFAULT, FusionParams, get_kind
from hgen.runtime.hdnn.cnn import NO_ANSWER
from hgen.runtime.labour import DifficultyEstimator, labour_per_sample, labour_ratio
from hgen.hub.transports.grpc_server import GrpcTransport

M, ACCURACY, CHUNK = 3, 0.9, 250
WINDOW_FRAMES = 1000  # the agent's default batching.labour_window_frames
HELD_CROWD_SEED = 0  # the SIMULATED people answering the held-out field split, the same in every round
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def frame_labour(logits: np.ndarray, temperature: float, m: int = M) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, L0 = d x m) per frame, by the runtime kind's estimate (the agent's `labour_difficulty`)."""
    kind, params = get_kind(DEFAULT_KIND), FusionParams(temperature, FUSION_LAMBDA_DEFAULT)
    confidence = kind.confidence(logits, params)
    difficulty = kind.difficulty(logits, confidence, params, DifficultyEstimator())
    return confidence, np.asarray(labour_per_sample(difficulty, m), np.float64)


def admitted(bucket: LabourBucket, wanted: np.ndarray, l0: np.ndarray, m: int = M) -> np.ndarray:
    """Which frames the device sends, in stream order: refill per frame, then the bucket for what the gate (or the
    audit draw) would send, reserving what the agent reserves (`LabourBucket.reserve`: the most m people can spend);
    replies settle at once at the estimate (simulated people spend what was estimated). Results measured before
    the agent reserved m x 3 (field_shift.md's runs) took the estimate alone."""
    sent = np.zeros(len(wanted), bool)
    for i in range(len(wanted)):
        bucket.frame()
        if wanted[i]:
            reserved = bucket.reserve(float(l0[i]), m)
            sent[i] = bucket.take(reserved)
            if sent[i]:
                bucket.settle(reserved, float(l0[i]))
    return sent


def evaluate(model: Any, temperature: float, tau: float, held: Split, labour_share: float,
             crowd_seed: int = HELD_CROWD_SEED, familiarity: Familiarity | None = None,
             unfamiliar_share: float = UNFAMILIAR_SHARE) -> dict[str, float]:
    """On the held-out field split with SIMULATED people: the device's numbers (gate plus its labour limit, a fresh
    bucket over the 2,000 frames in order) and the gate's alone (every frame under tau asked, and the drawn
    `unfamiliar_share` of the confident unfamiliar ones: what the model needs). The same crowd answers every round
    (`crowd_seed`, which also fixes the draw), so rounds differ only by model and gate: an unchanged model measures
    the same, and 'fused never below round 0' is not decided by which people answered."""
    logits = predict_logits(model, held.x)
    answers = hdnn.ask_crowd(SimulatedCrowd.uniform(M, ACCURACY, 10, seed=crowd_seed), logits, held.y, M, temperature)
    confidence, l0 = frame_labour(logits, temperature)
    unfamiliar = unfamiliar_frames(familiarity, held.x)
    asked = asked_unfamiliar(unfamiliar & (confidence >= tau), unfamiliar_share, crowd_seed)
    wanted = (confidence < tau) | asked
    sent = admitted(LabourBucket(labour_share, WINDOW_FRAMES), wanted, l0)
    used = np.where(sent[:, None], answers.labels, NO_ANSWER)
    fused = get_kind(DEFAULT_KIND).fuse(logits, used, FusionParams(temperature, FUSION_LAMBDA_DEFAULT))
    gate = hdnn.evaluate_hdnn(logits, held.y, answers, tau=tau, temperature=temperature, unfamiliar=asked)
    return {"accuracy_model_only": gate.accuracy_model, "accuracy_fused": float(np.mean(fused == held.y)),
            "share_to_people": float(sent.mean()), "labour": labour_ratio(float(l0[sent].sum()), len(held)),
            "gate_accuracy_fused": gate.accuracy_fused, "gate_share_to_people": gate.share_to_people,
            "gate_labour": gate.labour, "unfamiliar_share": float(unfamiliar.mean()), "tau": tau,
            "temperature": temperature}


def frame_sample(device_id: str, x: np.ndarray, probs: np.ndarray, name: str, version: str) -> hub_pb2.Sample:
    """A frame as the device sends it: grey as PNG, colour (RGB in [0, 1]) as a BGR PNG (OpenCV's order, which the
    hub decodes back to the model's RGB)."""
    sample = grey_sample(device_id, x[:, :, :1], probs, name, version)
    if x.shape[2] == 3:
        ok, png = cv2.imencode(".png", np.clip(x[:, :, ::-1] * 255.0, 0, 255).astype(np.uint8))
        assert ok
        sample.image.CopyFrom(hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=x.shape[0],
                                            width=x.shape[1], channels=3))
    return sample


class Stream:
    """The device over real gRPC: runs the current model on field frames and sends those under tau, a drawn share of
    the confident unfamiliar ones and an audit share of the confident familiar ones within its labour limit
    (active), or randomly chosen frames (passive); cycles the stream like a camera. The bucket lives as long as the
    device (across model versions)."""

    def __init__(self, app: Any, device_id: str, stream: Split, name: str, audit: float, labour_share: float | None,
                 passive: bool, seed: int, unfamiliar_share: float = UNFAMILIAR_SHARE) -> None:
        self.stream, self.name, self.audit, self.passive = stream, name, audit, passive
        self.unfamiliar_share = unfamiliar_share
        self.device_id = device_id
        self.rng = np.random.default_rng(seed)
        self.bucket = LabourBucket(None if passive else labour_share, WINDOW_FRAMES)
        self.position = 0
        self.oracle: dict[str, int] = {}  # sample id -> true class: what the simulated people "see"
        self.device = GrpcDevice(f"127.0.0.1:{app.transport(GrpcTransport).port}", ReplyLog(), call_timeout_s=300,
                                 token=enroll(app, device_id)[device_id].bearer)

    def send_until(self, labels: int, version: str, keras_path: str, temperature: float, tau: float,
                   familiarity: Familiarity | None = None) -> dict[str, int]:
        model = load_model_file(keras_path)
        seen = sent = audits = limited = 0
        while sent < labels:
            start = self.position % len(self.stream)
            x, y = self.stream.x[start:start + CHUNK], self.stream.y[start:start + CHUNK]
            self.position += len(x)
            logits = predict_logits(model, x)
            probs = softmax(logits, temperature)
            confidence, l0 = frame_labour(logits, temperature)
            if self.passive:
                wanted, audited = self.rng.random(len(x)) < 0.5, np.zeros(len(x), bool)
            else:
                under = confidence < tau  # the agent's Gate: under tau, else one draw (unfamiliar or audit)
                unlike = unfamiliar_frames(familiarity, x) & ~under
                draw = self.rng.random(len(x))
                audited = ~under & ~unlike & (draw < self.audit)
                wanted = under | (unlike & (draw < self.unfamiliar_share)) | audited
            send = admitted(self.bucket, wanted, l0)
            chosen = np.flatnonzero(send)[: labels - sent]
            seen += len(x)
            limited += int((wanted & ~send).sum())
            if len(chosen):
                samples = [frame_sample(self.device_id, x[i], probs[i], self.name, version) for i in chosen]
                for i, s in zip(chosen, samples):
                    self.oracle[s.sample_id] = int(y[i])
                self.device.submit_until_replied(make_request(self.device_id, samples, m=M))
                sent += len(samples)
                audits += int(audited[chosen].sum())
        return {"stream_frames": seen, "sent_to_people": sent, "audits": audits, "labour_limited": limited}

    def close(self) -> None:
        self.device.close()


def colour_folder(root: Path, size: int = 32, counts: tuple[int, int, int] = (15000, 3000, 5000),
                  class_hues: bool = False) -> str:
    """ROOT/{train,val,test}/<class>/*.jpg from FashionMNIST's first images of each split through
    `hgen.compiler.data.synthetic.write_colour_folder` (seeds 10, 11, 12; `class_hues` as there); written once
    (ROOT/done.json holds the recipe). Returns the clean data set's spec, read through the `folder` format."""
    from hgen.compiler.data.synthetic import write_colour_folder

    recipe: dict[str, Any] = {"source": "fashion-mnist", "size": size, "counts": list(counts), "seeds": [10, 11, 12]}
    if class_hues:
        recipe["class_hues"] = True
    marker = root / "done.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == recipe):
        fashion = load_dataset("fashion-mnist", seed=0)
        for seed, (split, n) in zip(recipe["seeds"], zip(("train", "val", "test"), counts)):
            part = getattr(fashion, split)
            write_colour_folder(root / split, part.x[:n], part.y[:n], CLASS_NAMES, size=size, seed=seed,
                                class_hues=class_hues)
        marker.write_text(json.dumps(recipe))
    return f"folder:{root.resolve()}?size={size}"
