"""Cheap screening of plans before any fine-tune: the compressed model's fidelity to the base model, untrained.

A fine-tuned backbone is what the budget counts (12 per search), so a strategy can propose several plans and train
only the one most likely to be accurate. The proxy rewrites the plan's layers (the same weight-preserving `apply`
the evaluator uses) and, without training, compares its logits with the base model's on a few hundred TRAINING images
(the fine-tune subset): the search split is never looked at, so screening adds no selection on the data that judges
feasibility. `tools/bench/search_quality_proxy.py` measures how well each score ranks plans like their fine-tuned
accuracy does; the default is the one that ranked best there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.compiler.errors import CompilerError
from hgen.compiler.search.space import apply
from hgen.compiler.train import predict_logits


@dataclass(frozen=True)
class ScreenConfig:
    """How many plans the DQN proposes per fine-tune, and how many training images score each one."""

    proposals: int = 4
    samples: int = 500


@dataclass(frozen=True)
class Fidelity:
    """An untrained compressed model against the base model on the same images (higher is better for both)."""

    agreement: float  # share of images where the compressed model's top class is the base model's
    neg_kl: float  # minus the mean KL(base || compressed) of the softmax outputs

    @property
    def score(self) -> float:
        return self.neg_kl


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fidelity(student_logits: np.ndarray, teacher_logits: np.ndarray) -> Fidelity:
    """Top-1 agreement and minus the mean KL divergence; non-finite outputs score worst."""
    if not np.all(np.isfinite(student_logits)):
        return Fidelity(0.0, -np.inf)
    p_log, q_log = _log_softmax(teacher_logits), _log_softmax(student_logits)
    kl = float(np.mean(np.sum(np.exp(p_log) * (p_log - q_log), axis=1)))
    agreement = float(np.mean(student_logits.argmax(axis=1) == teacher_logits.argmax(axis=1)))
    return Fidelity(agreement, -kl)


class Screener:
    """Scores plans by untrained fidelity on the evaluator's first `samples` fine-tune images; caches by plan."""

    def __init__(self, evaluator: Any, config: ScreenConfig = ScreenConfig()) -> None:
        self.evaluator = evaluator
        self.config = config
        count = min(config.samples, len(evaluator.finetune))
        self.x = evaluator.finetune.x[:count]
        self.teacher = evaluator.teacher_logits[:count]
        self._cache: dict[str, Fidelity] = {}

    def fidelity(self, plan: dict[str, str]) -> Fidelity:
        from hgen.compiler.search.space import plan_key

        key = plan_key(plan)
        if key not in self._cache:
            self._cache[key] = self._measure(plan)
        return self._cache[key]

    def _measure(self, plan: dict[str, str]) -> Fidelity:
        ev = self.evaluator
        try:
            model = apply(ev.base, plan, ev.space.ratios, ev.finetune.x[:512])
        except CompilerError:  # the evaluator will record why; here it simply ranks last
            return Fidelity(0.0, -np.inf)
        return fidelity(predict_logits(model, self.x), self.teacher)

    def best(self, plans: list[dict[str, str]]) -> dict[str, str]:
        """The plan with the highest score (the first on ties)."""
        return max(plans, key=lambda plan: self.fidelity(plan).score)
