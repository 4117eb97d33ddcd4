"""The acceptance check: a new model replaces the deployed one only if it is no worse on what people said
(the held-out human-labelled set) and on the original test split, by the kind's metric (accuracy for H-CNN,
mAP@0.5 for H-YOLO; `hgen.hub.retrain.kinds`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hgen.compiler.data import Split
from hgen.compiler.train import predict_logits
from hgen.hub.retrain.data import HumanSet


@dataclass(frozen=True)
class Acceptance:
    """Model-only scores (`metric`) of the current and the new model; `reason` explains a refusal."""

    accepted: bool
    current_holdout: float
    new_holdout: float
    holdout_samples: int
    current_test: float
    new_test: float
    test_samples: int
    reason: str = ""
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict_logits(model, x).argmax(axis=1) == y)) if len(y) else float("nan")


def accuracy_score(model: Any, labelled: Any) -> float:
    """H-CNN's metric: model-only accuracy on a set with `.x` and `.y`."""
    return _accuracy(model, labelled.x, labelled.y)


Score = Callable[[Any, Any], float]


def check(current: Any, new: Any, holdout: HumanSet | Any, test: Split | Any, *, tolerance: float,
          min_holdout: int, score: Score = accuracy_score, metric: str = "accuracy") -> Acceptance:
    """Accept when new >= current - tolerance on both sets; too small a held-out set is a refusal, not a pass."""
    cur_h, new_h = score(current, holdout), score(new, holdout)
    cur_t, new_t = score(current, test), score(new, test)
    reasons = []
    if len(holdout) < min_holdout:
        reasons.append(f"only {len(holdout)} held-out human-labelled samples (need {min_holdout})")
    elif new_h < cur_h - tolerance:
        reasons.append(f"held-out human {metric} fell from {cur_h:.4f} to {new_h:.4f}")
    if new_t < cur_t - tolerance:
        reasons.append(f"original test {metric} fell from {cur_t:.4f} to {new_t:.4f}")
    return Acceptance(not reasons, cur_h, new_h, len(holdout), cur_t, new_t, len(test), "; ".join(reasons), metric)
