"""H-DNN kinds: one registered descriptor per kind says everything the project needs to know of it.

Each kind (`cnn`, `yolo`, `faster_rcnn`) is one module `runtime/hdnn/<kind>.py` registering an `HDNNKind` in
`KINDS`: its math (confidence, the model's answer, fusion of people's answers, output width, difficulty estimate)
and its facts (the wire enum, the label form people give, the default aggregator, the annotator page's view, the
retrain threshold). The compiler, the device agent, the hub and its web UI all call `get_kind(name)`; the agent,
the hub's retraining and the web UI add one discovered plugin file per kind (or view), so adding a kind is adding
files (docs/kinds.md). `tests/unit/test_kind_descriptors.py` checks every registered kind has all its parts.

The fusion weight lambda has one definition here (`FusionLambda`, `check_fusion_lambda`): the compile config, the
search, the manifest and the runtime all take it from this module, so they cannot disagree on its bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import Field

from hgen.runtime.errors import InvalidInputError
from hgen.runtime.labour import MAX_OPERATIONS, MIN_OPERATIONS, DifficultyEstimator
from hgen.runtime.registry import Registry

DEFAULT_KIND = "cnn"  # what a manifest or a sample that names no kind is (H-CNN came first; older bundles/devices)

# Fusion (H-CNN, paper section 4.1): fused = softmax(z / T) + lambda * sum of one-hot answers, argmax. The
# probabilities sum to 1, so any gap between two classes is below 1: at lambda = 1 one answer more than another
# class already outweighs every model gap, so lambda > 1 changes no fused answer (only the scale) and a bundle
# refuses it; at lambda = 0 people are asked and ignored (labour spent for nothing), so it is refused too. Between,
# lambda sets how many votes the model's confidence is worth. Valid: 0 < lambda <= 1.
FUSION_LAMBDA_DEFAULT = 0.1
FUSION_LAMBDA_MIN = 0.0  # exclusive
FUSION_LAMBDA_MAX = 1.0  # inclusive
FUSION_LAMBDA_TITLE = "Fusion weight lambda of each human answer, 0 < lambda <= 1 (docs/kinds.md)"
FusionLambda = Annotated[float, Field(gt=FUSION_LAMBDA_MIN, le=FUSION_LAMBDA_MAX, allow_inf_nan=False,
                                      title=FUSION_LAMBDA_TITLE)]


def check_fusion_lambda(value: float) -> float:
    """The one bounds check of lambda for code paths that are not pydantic configs (runtime, search)."""
    value = float(value)
    if not (FUSION_LAMBDA_MIN < value <= FUSION_LAMBDA_MAX) or math.isnan(value):
        raise InvalidInputError(f"fusion lambda must be in ({FUSION_LAMBDA_MIN:g}, {FUSION_LAMBDA_MAX:g}], "
                                f"got {value}")
    return value


@dataclass(frozen=True)
class FusionParams:
    """Parameters shared by every kind: calibration temperature and the weight of human answers."""

    temperature: float = 1.0
    fusion_lambda: float = FUSION_LAMBDA_DEFAULT

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise InvalidInputError(f"temperature must be > 0, got {self.temperature}")
        check_fusion_lambda(self.fusion_lambda)


Label = Literal["class_id", "boxes", "regions"]  # the hgen.v1.Answer `label` oneof


class HDNNKind(Protocol):
    """What an H-DNN kind is, in one place: its math and the facts the agent, the hub and the web UI read."""

    name: str
    proto_enum: str  # its hgen.v1.HdnnKind value's name (hgen.protos.kinds resolves it; the runtime has no protobuf)
    label: Label  # the Answer label people give for its samples
    aggregator: str  # default aggregator (hgen.hub.aggregators) when the hub's configured one cannot aggregate it
    view: str  # the annotator page's view (hgen.hub.web.views) that asks people for `label`
    retrain_threshold: int  # new human labels that trigger a retrain by default (the paper's number for the kind)

    def confidence(self, outputs: Any, params: FusionParams) -> np.ndarray:
        """Per-sample confidence in [0, 1]; a sample goes to people when it is below tau."""

    def predict(self, outputs: Any, params: FusionParams) -> Any:
        """The model's own answer (no people)."""

    def fuse(self, outputs: Any, answers: Any, params: FusionParams) -> Any:
        """The answer after fusing the annotators' answers into the model output."""

    def output_channels(self, num_labels: int) -> int:
        """Size of the output's last axis for `num_labels` classes (the manifest checks it against the labels)."""

    def difficulty(self, outputs: Any, confidence: np.ndarray, params: FusionParams,
                   estimator: DifficultyEstimator) -> np.ndarray:
        """Per-sample operations a person needs (d in [1, 3], Eq. 3): what the labour budget is charged."""


KINDS: Registry[HDNNKind] = Registry("H-DNN kind", package=__name__)


def get_kind(name: str) -> HDNNKind:
    return KINDS.get(name)


def kind_names() -> list[str]:
    return KINDS.names()


def output_channels(kind: str, num_labels: int) -> int:
    """The output width a bundle of `kind` must have; kinds this runtime does not know are checked as classifiers."""
    return KINDS.get(kind).output_channels(num_labels) if kind in KINDS else num_labels


def difficulty_from_confidence(confidence: float | np.ndarray) -> np.ndarray:
    """d = 1 + 2 (1 - c), clipped to [1, 3]: the estimate for kinds without class probabilities (and the hub's)."""
    d = MIN_OPERATIONS + (MAX_OPERATIONS - MIN_OPERATIONS) * (1.0 - np.asarray(confidence, dtype=np.float64))
    return np.clip(d, MIN_OPERATIONS, MAX_OPERATIONS)


def check_tau(tau: float) -> float:
    """tau is a probability threshold: outside [0, 1] it silently means 'never' or 'always', so refuse it."""
    if not 0.0 <= float(tau) <= 1.0 or np.isnan(tau):
        raise InvalidInputError(f"tau must be in [0, 1], got {tau}")
    return float(tau)


def needs_human(confidence: np.ndarray, tau: float) -> np.ndarray:
    """The gate: True where the model is unsure (c < tau) and people should be asked."""
    return np.asarray(confidence) < check_tau(tau)
