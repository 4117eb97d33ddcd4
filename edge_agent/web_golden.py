"""Golden vectors for the phone's port of the H-DNN (`android_bridge/src/hdnn.ts`, `preprocess.ts`).

The phone must decide as the Python device does, so the Python runtime itself writes the expected values: for
random logits, the calibrated probabilities, confidence, gate, the model's and the fused answers and the labour
estimate; for random frames, the model input the agent's preprocessing makes; for random camera planes, the RGB
`hgen.runtime.yuv`'s rule makes; for random model inputs, the familiarity check's statistics and flags
(`hgen.runtime.familiarity`). The TypeScript tests read this JSON.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from hgen.runtime.bundle.manifest import version_key
from hgen.runtime.hdnn import FusionParams, get_kind, needs_human
from hgen.runtime.labour import DifficultyEstimator, labour_per_sample

# (input height, width, channels), frame (height, width), resize: shrinking, enlarging, odd ratios, letterbox
PREPROCESS_CASES = (
    ((28, 28, 1), (56, 56), "stretch"), ((28, 28, 1), (28, 28), "stretch"), ((28, 28, 1), (480, 640), "stretch"),
    ((32, 32, 3), (45, 61), "stretch"), ((28, 28, 1), (14, 14), "stretch"), ((24, 40, 3), (17, 29), "stretch"),
    ((28, 28, 3), (48, 64), "letterbox"), ((32, 32, 1), (100, 37), "letterbox"), ((96, 96, 3), (240, 320), "stretch"),
    ((96, 96, 3), (112, 112), "stretch"),
)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def hdnn_case(rng: np.random.Generator, classes: int, rows: int) -> dict[str, Any]:
    """One H-CNN case: logits at several scales (confident and unsure rows), answers with gaps (-1)."""
    logits = rng.normal(0.0, rng.choice([0.3, 1.0, 4.0]), size=(rows, classes))
    params = FusionParams(float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.0, 1.0)))
    tau = float(rng.uniform(0.2, 0.95))
    m = int(rng.integers(1, 5))
    answers = rng.integers(-1, classes, size=(rows, m))
    estimator = DifficultyEstimator(tuple(float(c) for c in rng.normal(0, 2, 3)), float(rng.normal(-1, 1)))
    kind = get_kind("cnn")
    probs = kind.probabilities(logits, params)  # type: ignore[attr-defined]
    confidence = kind.confidence(logits, params)
    difficulty = estimator.difficulty(probs)
    return {
        "classes": classes, "temperature": params.temperature, "lambda": params.fusion_lambda, "tau": tau, "m": m,
        "estimator": estimator.to_dict(), "logits": logits.tolist(), "answers": answers.tolist(),
        "probabilities": probs.tolist(), "confidence": confidence.tolist(),
        "needs_human": needs_human(confidence, tau).tolist(), "predict": kind.predict(logits, params).tolist(),
        "difficulty": difficulty.tolist(), "labour": np.asarray(labour_per_sample(difficulty, m)).tolist(),
        "fused_scores": kind.fused_scores(logits, answers, params).tolist(),  # type: ignore[attr-defined]
        "fused": kind.fuse(logits, answers, params).tolist(),
    }


def preprocess_case(rng: np.random.Generator, shape: tuple[int, int, int], frame: tuple[int, int],
                    resize: str) -> dict[str, Any]:
    """An RGBA frame (what a browser canvas gives) and the input the Python agent makes of the same pixels."""
    from hgen.edge_agent.model import preprocess
    from hgen.runtime.bundle.manifest import InputSpec

    height, width = frame
    smooth = np.kron(rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 4)), np.ones((4, 4, 1)))[:height, :width]
    rgba = np.clip(smooth + rng.integers(-20, 21, (height, width, 4)), 0, 255).astype(np.uint8)
    rgba[..., 3] = np.where(rng.random((height, width)) < 0.9, 255, rgba[..., 3])
    spec = InputSpec(shape=(1, *shape), scale=float(rng.choice([1 / 255, 2 / 255])),
                     offset=float(rng.choice([0.0, -1.0])), resize=resize, pad_value=int(rng.integers(0, 256)))
    bgra = rgba[..., [2, 1, 0, 3]]
    expected, _ = preprocess(bgra, spec)
    return {"input": spec.model_dump(mode="json"), "frame_height": height, "frame_width": width,
            "rgba_b64": _b64(rgba), "expected_b64": _b64(expected.astype("<f4"))}


def gate_case(rng: np.random.Generator, frames: int = 300) -> dict[str, Any]:
    """A stream through the agent's Gate (audits drawn from its seeded generator) and LabourBucket, in the
    agent's order: refill per frame, gate (c < tau; else the unfamiliar or the audit draw; rate limit), then the bucket
    for what would go to people."""
    from hgen.edge_agent.config import GateConfig
    from hgen.edge_agent.gating import Decision, Gate, LabourBucket

    share = None if rng.random() < 0.2 else float(rng.uniform(0.005, 0.2))
    interval = float(rng.choice([0.0, 0.05, 0.3]))
    window = int(rng.integers(5, 200))
    audit_share = float(rng.choice([0.0, 0.02, 0.3]))
    unfamiliar_share = float(rng.choice([0.0, 0.2, 1.0]))
    seed = int(rng.choice([0, 1, 2**32 + 5, int(rng.integers(2**40))]))  # one and several 32-bit words
    gate = Gate(GateConfig(audit_share=audit_share, unfamiliar_share=unfamiliar_share,
                           min_escalation_interval_s=interval, seed=seed))
    bucket = LabourBucket(share, window)
    unsure = (rng.random(frames) < rng.uniform(0.1, 0.9)).tolist()
    labour = rng.uniform(1.0, 9.0, frames).tolist()
    now = np.cumsum(rng.uniform(0.0, 0.1, frames)).tolist()
    unfamiliar = (rng.random(frames) < rng.choice([0.0, 0.1, 0.4])).tolist()  # the unfamiliar draw, not the audit
    decisions = []
    for flag, cost, at, unlike in zip(unsure, labour, now, unfamiliar):
        bucket.frame()
        decision = gate.decide(0.0 if flag else 1.0, 0.5, at, unfamiliar=unlike)
        if decision.to_people and not bucket.take(cost):
            decision = Decision.BUDGET
        decisions.append(decision.value)
    return {"share": share, "interval": interval, "window": window, "unsure": unsure, "labour": labour, "now": now,
            "unfamiliar": unfamiliar, "audit_share": audit_share, "unfamiliar_share": unfamiliar_share, "seed": seed,
            "decisions": decisions}


FAMILIARITY_SHAPES = ((28, 28, 1), (32, 32, 3), (5, 7, 3), (3, 3, 1), (24, 40, 3))
# how field images differ from the training ones: not at all, darker, brighter, flatter, harsher, noisier, blurred
FIELD_CONDITIONS = ("same", "same", "same", "dark", "bright", "low_contrast", "high_contrast", "noise", "blur")
BOUND_MARGIN = 1e-9  # relative: no case this close to a bound, so float rounding cannot flip a flag


def _images(rng: np.random.Generator, n: int, shape: tuple[int, int, int], block: int) -> np.ndarray:
    """Training-like model inputs: a level, a blocky pattern and a little noise, in about [0, 1]."""
    h, w, c = shape
    pattern = np.kron(rng.uniform(-1, 1, (n, h // block + 1, w // block + 1, c)), np.ones((1, block, block, 1)))
    level = rng.uniform(0.35, 0.65, (n, 1, 1, 1))
    x = level + rng.uniform(0.1, 0.25, (n, 1, 1, 1)) * pattern[:, :h, :w] + rng.normal(0, 0.02, (n, h, w, c))
    return x.astype(np.float32)


def _field(rng: np.random.Generator, x: np.ndarray, condition: str) -> np.ndarray:
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    if condition == "dark":
        x = x * rng.uniform(0.3, 0.9)
    elif condition == "bright":
        x = x + rng.uniform(0.05, 0.4)
    elif condition == "low_contrast":
        x = mean + (x - mean) * rng.uniform(0.3, 0.9)
    elif condition == "high_contrast":
        x = mean + (x - mean) * rng.uniform(1.1, 2.5)
    elif condition == "noise":
        x = x + rng.normal(0, rng.uniform(0.005, 0.1), x.shape)
    elif condition == "blur":
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(padded[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9.0
    return np.asarray(x, np.float32)


def familiarity_case(rng: np.random.Generator, shape: tuple[int, int, int], images: int = 63) -> dict[str, Any]:
    """Ranges fitted on training-like images; field images under each condition (some inside the ranges, some
    outside) and the training images at the extremes of each statistic (just outside or inside a bound); their
    statistics and unfamiliar flags from `hgen.runtime.familiarity`. Cases within BOUND_MARGIN of a bound are
    dropped."""
    from hgen.runtime.familiarity import fit_familiarity, image_stats

    block = int(rng.integers(1, 4))
    training = _images(rng, 300, shape, block)
    familiarity = fit_familiarity(training, float(rng.choice([0.001, 0.01, 0.05])))
    conditions = [FIELD_CONDITIONS[i % len(FIELD_CONDITIONS)] for i in range(images)]
    field = [_field(rng, _images(rng, 1, shape, block), condition) for condition in conditions]
    extremes = [int(pick(values)) for values in image_stats(training).values() for pick in (np.argmin, np.argmax)]
    x = np.concatenate([*field, training[extremes]])
    conditions += ["training"] * len(extremes)
    stats = image_stats(x)
    near = np.zeros(len(x), bool)
    for name, bounds in familiarity.ranges().items():
        for bound in (bounds.low, bounds.high):
            near |= np.abs(stats[name] - bound) <= BOUND_MARGIN * max(1.0, abs(bound))
    x = x[~near]
    return {"shape": list(shape), "familiarity": familiarity.model_dump(), "images_b64": _b64(x.astype("<f4")),
            "conditions": [c for c, dropped in zip(conditions, near) if not dropped],
            "stats": {name: values.tolist() for name, values in image_stats(x).items()},
            "unfamiliar": familiarity.unfamiliar(x).tolist()}


def random_case(seed: int, draws: int = 1000) -> dict[str, Any]:
    """Python's `random.Random(seed).random()` sequence, which the agent's audit draw uses (android_bridge's
    src/pyrandom.ts ports it)."""
    import random

    generator = random.Random(seed)
    return {"seed": seed, "values": [generator.random() for _ in range(draws)]}


def quantize_case(rng: np.random.Generator, size: int = 2000) -> dict[str, Any]:
    """The agent's int8 (de)quantisation (`QuantParams`) as uint8 (zero point + 128), which the phone's LiteRT.js
    model takes and gives: inputs hit exact halves, the clip limits and ordinary values."""
    from hgen.runtime.engines.base import QuantParams

    scale = float(np.float32(rng.choice([1 / 255, 2 / 255, rng.uniform(0.001, 0.2)])))
    params = QuantParams(scale, int(rng.integers(-128, 128)))
    steps = rng.integers(-300, 300, size).astype(np.float32)
    x = np.concatenate([(steps + 0.5) * np.float32(scale), rng.normal(0, 200 * scale, size)]).astype(np.float32)
    out = rng.integers(-128, 128, size).astype(np.int8)
    out_params = QuantParams(float(np.float32(rng.uniform(0.01, 0.3))), int(rng.integers(-128, 128)))
    return {"input": x.tolist(), "input_quant": {"scale": params.scale, "zero_point": params.zero_point + 128},
            "quantized": (params.quantize(x).astype(np.int16) + 128).tolist(),
            "output": (out.astype(np.int16) + 128).tolist(),
            "output_quant": {"scale": out_params.scale, "zero_point": out_params.zero_point + 128},
            "dequantized": out_params.dequantize(out).tolist()}


def yuv_case(rng: np.random.Generator, fmt: str, height: int, width: int, matrix: str,
             full_range: bool) -> dict[str, Any]:
    """Camera planes (I420 or NV12, rows padded past the width as cameras pad them; extremes included) and the RGB
    `hgen.runtime.yuv` makes of them: the page's rule must give the same bytes."""
    from hgen.runtime.yuv import i420_to_rgb

    ch, cw = (height + 1) // 2, (width + 1) // 2
    y = rng.integers(0, 256, (height, width)).astype(np.uint8)
    u, v = (rng.integers(0, 256, (ch, cw)).astype(np.uint8) for _ in range(2))
    y[0, :2], u[0, 0], v[0, 0] = (0, 255), 0, 255  # clamping on both sides
    pad = int(rng.integers(0, 9))
    planes = [y, u, v] if fmt == "I420" else [y, np.stack([u, v], axis=2).reshape(ch, 2 * cw)]
    data, layout = b"", []
    for plane in planes:
        stride = plane.shape[1] + pad
        padded = np.zeros((plane.shape[0], stride), np.uint8)
        padded[:, :plane.shape[1]] = plane
        layout.append({"offset": len(data), "stride": stride})
        data += padded.tobytes()
    return {"format": fmt, "width": width, "height": height, "matrix": matrix, "full_range": full_range,
            "layout": layout, "data_b64": base64.b64encode(data).decode(),
            "expected_b64": _b64(i420_to_rgb(y, u, v, matrix, full_range))}


YUV_CASES = (("I420", 6, 8), ("I420", 7, 9), ("NV12", 10, 6), ("NV12", 5, 11), ("I420", 48, 64))


VERSIONS = ("0.1.0", "0.2.0", "0.10.0", "1.0.0", "1.0.0+small", "1.0.1-rc.1", "1.0.10", "2.0", "v3.0.0", "")


def version_cases() -> list[dict[str, Any]]:
    """Every pair's order: the phone follows an update notice only for a newer version, as the agent does."""
    return [{"candidate": a, "running": b, "newer": version_key(a) > version_key(b)} for a in VERSIONS
            for b in VERSIONS]


def golden_vectors(seed: int = 0, hdnn_cases: int = 40) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "hdnn": [hdnn_case(rng, int(rng.integers(2, 20)), int(rng.integers(1, 30))) for _ in range(hdnn_cases)],
        "gate": [gate_case(rng) for _ in range(16)],
        "random": [random_case(seed) for seed in (0, 1, 42, 2**32 - 1, 2**32, 2**52 + 3)],
        "quantize": [quantize_case(rng) for _ in range(6)],
        "preprocess": [preprocess_case(rng, shape, frame, resize) for shape, frame, resize in PREPROCESS_CASES],
        "familiarity": [familiarity_case(rng, shape) for shape in FAMILIARITY_SHAPES],
        "versions": version_cases(),
        "yuv": [yuv_case(rng, fmt, h, w, matrix, full) for fmt, h, w in YUV_CASES for matrix in ("bt601", "bt709")
                for full in (False, True)],
    }


def write_golden(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    path.write_text(json.dumps(golden_vectors(seed)))
    return path
