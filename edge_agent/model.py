"""A verified bundle ready to run: preprocessing from its input spec, inference, confidence, labour estimate.

Everything the pipeline needs from "the current model" lives here, so a hot swap replaces one object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hgen.edge_agent.config import BundleConfig
from hgen.edge_agent.errors import FrameShapeError, ModelKindError
from hgen.edge_agent.kinds import KindAdapter, adapter_for
from hgen.runtime.bundle import InputSpec, Manifest, load_bundle, load_first_runnable
from hgen.runtime.bundle.loader import LoadedBundle
from hgen.runtime.engines import Engine
from hgen.runtime.hdnn import FusionParams, HDNNKind, get_kind
from hgen.runtime.labour import DifficultyEstimator
from hgen.runtime.preprocess import FrameShapeError as RuntimeFrameShapeError
from hgen.runtime.preprocess import fit, frame_channels, normalise

DEFAULT_M = 3


def preprocess(image: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, bool]:
    """uint8 frame (OpenCV: grey, BGR or BGRA) -> one model input (H, W, C) float32, through the runtime's steps
    (`hgen.runtime.preprocess`), so the device feeds the model exactly what the compiler trained it on.

    Returns the input and whether the frame had to be resized (frames of the wrong size are counted); a frame that
    cannot become the input is the agent's FrameShapeError.
    """
    if spec.layout != "NHWC" or len(spec.shape) != 4:
        raise FrameShapeError(f"cannot feed camera frames to a model with input layout {spec.layout} {spec.shape}")
    _, height, width, channels = spec.shape
    try:
        image = frame_channels(image, channels)
        resized = image.shape[:2] != (height, width)
        if resized:
            image = fit(image, height, width, spec.resize, spec.pad_value)
        return normalise(image, spec.scale, spec.offset), resized
    except RuntimeFrameShapeError as exc:
        raise FrameShapeError(str(exc)) from None


@dataclass
class Model:
    """One loaded bundle: the engine to run, the H-DNN kind and the parameters the gate and fusion need."""

    bundle: LoadedBundle
    engine: Engine
    kind: HDNNKind
    params: FusionParams
    tau: float
    m: int
    difficulty: DifficultyEstimator
    path: Path

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def adapter(self) -> KindAdapter:
        """How this kind's outputs become results and samples for people."""
        return adapter_for(self.manifest.kind)

    def confidence(self, outputs: np.ndarray) -> float:
        """The runtime kind's confidence of one sample (outputs with a batch axis of 1): the gate's c."""
        return float(self.kind.confidence(outputs, self.params)[0])

    @property
    def version(self) -> str:
        return self.manifest.model.version

    @property
    def name(self) -> str:
        return self.manifest.model.name

    def infer(self, inputs: np.ndarray) -> np.ndarray:
        """Logits for inputs (N, H, W, C); pads to the model's fixed batch and trims the padding."""
        batch = self.engine.input_spec.batch
        n = len(inputs)
        pad = (-n) % batch
        if pad:
            inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
        return self.engine.run(inputs)[:n]

    def labour_difficulty(self, outputs: np.ndarray, confidence: float) -> float:
        """Operations a person needs for one sample (d of Eq. 3), by the runtime kind's own estimate."""
        return float(self.kind.difficulty(outputs, np.array([confidence]), self.params, self.difficulty)[0])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        probs = getattr(self.kind, "probabilities", None)
        if probs is None:
            raise ModelKindError(f"H-DNN kind {self.kind.name} has no class probabilities")
        return probs(logits, self.params)

    def close(self) -> None:
        self.bundle.close()


def difficulty_from_manifest(confidence: dict[str, float]) -> DifficultyEstimator:
    """The estimator the compiler stored (`difficulty_coef_0..2`, `difficulty_intercept`), else the default."""
    coefs = [confidence[f"difficulty_coef_{i}"] for i in range(3) if f"difficulty_coef_{i}" in confidence]
    if len(coefs) != 3 or "difficulty_intercept" not in confidence:
        return DifficultyEstimator()
    return DifficultyEstimator(tuple(coefs), float(confidence["difficulty_intercept"]))


def load_model(path: Path, config: BundleConfig, *, tau: float | None = None, m: int | None = None) -> Model:
    """Verify (signature, target, hashes) and open the bundle at `path`; typed bundle errors propagate."""
    if config.engine:
        bundle = load_bundle(path, trusted_public_key=config.public_key, expected_target=config.expected_target,
                             engines=[config.engine], engine_options=config.engine_options)
    else:  # the first that runs here: a bundle also lists engines for other devices
        bundle = load_first_runnable(path, trusted_public_key=config.public_key,
                                     expected_target=config.expected_target, engine_options=config.engine_options)
    try:
        manifest = bundle.manifest
        engine = bundle.engine
        engine.warm_up(1)
        adapter_for(manifest.kind)  # a kind this agent cannot report refuses the bundle now, not at the first frame
        return Model(bundle, engine, get_kind(manifest.kind),
                     FusionParams(manifest.temperature, manifest.fusion_lambda),
                     manifest.tau if tau is None else tau,
                     m or int(manifest.confidence.get("m", DEFAULT_M)),
                     difficulty_from_manifest(manifest.confidence), Path(path))
    except BaseException:
        bundle.close()
        raise
