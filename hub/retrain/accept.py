"""The acceptance check: a new model replaces the deployed one only if it is no worse on what people said
(the held-out human-labelled set) and on the original test split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hgen.compiler.data import Split
from hgen.compiler.train import predict_logits
from hgen.hub.retrain.data import HumanSet


@dataclass(frozen=True)
class Acceptance:
    """Model-only accuracies of the current and the new model; `reason` explains a refusal."""

    accepted: bool
    current_holdout: float
    new_holdout: float
    holdout_samples: int
    current_test: float
    new_test: float
    test_samples: int
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict_logits(model, x).argmax(axis=1) == y)) if len(y) else float("nan")


def check(current: Any, new: Any, holdout: HumanSet, test: Split, *, tolerance: float,
          min_holdout: int) -> Acceptance:
    """Accept when new >= current - tolerance on both sets; too small a held-out set is a refusal, not a pass."""
    cur_h, new_h = _accuracy(current, holdout.x, holdout.y), _accuracy(new, holdout.x, holdout.y)
    cur_t, new_t = _accuracy(current, test.x, test.y), _accuracy(new, test.x, test.y)
    reasons = []
    if len(holdout) < min_holdout:
        reasons.append(f"only {len(holdout)} held-out human-labelled samples (need {min_holdout})")
    elif new_h < cur_h - tolerance:
        reasons.append(f"held-out human accuracy fell from {cur_h:.4f} to {new_h:.4f}")
    if new_t < cur_t - tolerance:
        reasons.append(f"original test accuracy fell from {cur_t:.4f} to {new_t:.4f}")
    return Acceptance(not reasons, cur_h, new_h, len(holdout), cur_t, new_t, len(test), "; ".join(reasons))
