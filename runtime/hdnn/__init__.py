"""H-DNN kinds: how a model's output becomes a confidence and how human answers are fused into it.

Each kind (`cnn`, `yolo`; `frcnn` later) is one module registering an `HDNNKind` in `KINDS`. The compiler's
evaluator, the hub and the device agent all call `get_kind(name)`, so adding detection is adding a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hgen.runtime.errors import InvalidInputError
from hgen.runtime.registry import Registry, discover


@dataclass(frozen=True)
class FusionParams:
    """Parameters shared by every kind: calibration temperature and the weight of human answers."""

    temperature: float = 1.0
    fusion_lambda: float = 0.1

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise InvalidInputError(f"temperature must be > 0, got {self.temperature}")
        if self.fusion_lambda < 0:
            raise InvalidInputError(f"fusion lambda must be >= 0, got {self.fusion_lambda}")


class HDNNKind(Protocol):
    """What the runtime needs to know of an H-DNN kind."""

    name: str

    def confidence(self, outputs: Any, params: FusionParams) -> np.ndarray:
        """Per-sample confidence in [0, 1]; a sample goes to people when it is below tau."""

    def predict(self, outputs: Any, params: FusionParams) -> Any:
        """The model's own answer (no people)."""

    def fuse(self, outputs: Any, answers: Any, params: FusionParams) -> Any:
        """The answer after fusing the annotators' answers into the model output."""

    def output_channels(self, num_labels: int) -> int:
        """Size of the output's last axis for `num_labels` classes (the manifest checks it against the labels)."""


KINDS: Registry[HDNNKind] = Registry("H-DNN kind")


def get_kind(name: str) -> HDNNKind:
    discover(__name__)
    return KINDS.get(name)


def kind_names() -> list[str]:
    discover(__name__)
    return KINDS.names()


def output_channels(kind: str, num_labels: int) -> int:
    """The output width a bundle of `kind` must have; kinds this runtime does not know are checked as classifiers."""
    discover(__name__)
    return KINDS.get(kind).output_channels(num_labels) if kind in KINDS else num_labels


def check_tau(tau: float) -> float:
    """tau is a probability threshold: outside [0, 1] it silently means 'never' or 'always', so refuse it."""
    if not 0.0 <= float(tau) <= 1.0 or np.isnan(tau):
        raise InvalidInputError(f"tau must be in [0, 1], got {tau}")
    return float(tau)


def needs_human(confidence: np.ndarray, tau: float) -> np.ndarray:
    """The gate: True where the model is unsure (c < tau) and people should be asked."""
    return np.asarray(confidence) < check_tau(tau)
