"""The demo's two pools of held-out test images, and how a deployed bundle is measured on the evaluation pool.

A camera never stops, so the agent cycles the streaming pool until the retrain is published and swapped; people
label frames of that pool and the retrain learns from them. Accuracy before and after is measured only on the
evaluation pool: images no person labelled and no model trained on. Both versions run through the device's own
path (signed bundle -> LiteRT engine -> runtime gate at the bundle's tau -> runtime fusion), on the same images and
the same SIMULATED answers, so the two rows differ only by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data import Split
from hgen.compiler.data.detection import DetectionSplit
from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.familiarity import UNFAMILIAR_SHARE, asked_unfamiliar, unfamiliar_frames


@dataclass(frozen=True)
class Pools:
    """Disjoint, seeded halves (by `eval_share`) of the test split."""

    stream: Split | DetectionSplit
    evaluation: Split | DetectionSplit


def pick(split: Split | DetectionSplit, index: np.ndarray) -> Split | DetectionSplit:
    """Rows `index` of a classification or detection split, as float32 arrays (pools are small: they become a video
    and bundle inputs)."""
    if isinstance(split, DetectionSplit):
        return DetectionSplit(split.x[index], tuple(split.boxes[i] for i in index))
    return Split(np.asarray(split.x[index], np.float32), split.y[index])


def split_pools(test: Split | DetectionSplit, eval_share: float, seed: int) -> Pools:
    """Stratification is not needed at these sizes; a seeded permutation keeps both pools representative."""
    if not 0 < eval_share < 1:
        raise InvalidArgumentError(f"eval_share must be in (0, 1), got {eval_share}")
    order = np.random.default_rng(seed).permutation(len(test))
    cut = int(round(len(test) * eval_share))
    if cut < 1 or cut >= len(test):
        raise InvalidArgumentError(f"{len(test)} test images cannot be split {eval_share:g} / {1 - eval_share:g}")
    evaluation, stream = np.sort(order[:cut]), np.sort(order[cut:])
    return Pools(pick(test, stream), pick(test, evaluation))


def camera_frames(images: np.ndarray) -> np.ndarray:
    """What a camera hands the device: uint8 pixels, converted as `write_video` writes the stream's frames."""
    return (np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8)


def bundle_logits(bundle: str | Path, public_key: str | Path, target: str,
                  images: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
    """Logits of the bundle's LiteRT engine on `images` (float [0, 1]), normalised by the bundle's input spec; its
    manifest; and which images its familiarity check finds unlike the training images (the device asks about them)."""
    from hgen.runtime.bundle.loader import load_bundle

    with load_bundle(bundle, trusted_public_key=public_key, expected_target=target, engines=["litert"]) as loaded:
        spec, engine = loaded.manifest.input, loaded.engine
        x = camera_frames(images).astype(np.float32) * spec.scale + spec.offset
        size = engine.input_spec.batch
        pad = (-len(x)) % size
        padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), np.float32)]) if pad else x
        return engine.run(padded)[: len(x)], loaded.manifest, unfamiliar_frames(loaded.manifest.familiarity, x)


def evaluate_versions(bundles: dict[str, tuple[str, str | Path]], public_key: str | Path, target: str, pool: Split, *,
                      m: int, annotator_accuracy: float, seed: int,
                      unfamiliar_share: float = UNFAMILIAR_SHARE) -> dict[str, dict[str, Any]]:
    """`bundles` maps a row name to (version, bundle path); every row gets A (model only, fused), share and L, the
    device asking about every frame under tau and a drawn `unfamiliar_share` of the confident unfamiliar ones."""
    from hgen.compiler.metrics.hdnn import ask_crowd, evaluate_hdnn
    from hgen.hub.crowd import SimulatedCrowd

    rows: dict[str, dict[str, Any]] = {}
    answers = None
    for name, (version, path) in bundles.items():
        logits, manifest, unfamiliar = bundle_logits(path, public_key, target, pool.x)
        if answers is None:  # one set of simulated answers for every row: hardness from the first model's view
            crowd = SimulatedCrowd.uniform(m, annotator_accuracy, len(manifest.labels), seed=seed)
            answers = ask_crowd(crowd, logits, pool.y, m, manifest.temperature)
        result = evaluate_hdnn(logits, pool.y, answers, tau=manifest.tau, temperature=manifest.temperature,
                               fusion_lambda=manifest.fusion_lambda, kind=manifest.kind,
                               unfamiliar=asked_unfamiliar(unfamiliar, unfamiliar_share, seed))
        rows[name] = {"version": version, "images": result.samples, "tau": manifest.tau,
                      "model_only": result.accuracy_model, "fused": result.accuracy_fused,
                      "share_to_people": result.share_to_people, "labour": result.labour,
                      "unfamiliar_share": float(np.mean(unfamiliar))}
    return rows

