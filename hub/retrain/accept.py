"""The acceptance check: a new model replaces the deployed one only if it is no worse on what people said
(the held-out human-labelled set) and on the original test split, by the kind's metric (accuracy for H-CNN,
mAP@0.5 for H-YOLO; `hgen.hub.retrain.kinds`).

"No worse" on a few hundred held-out labels is judged beyond their noise where the kind scores each sample: a new
model is refused only when it falls short by more than `retrain.noise_se` standard errors of the paired difference
(and the tolerance). Judged frame by frame, one or two frames decided most refusals (issue 18), and a refused
retrain is a round of people's labels the device does not learn from.

Expected accuracy with people rises with the frames sent to them (each scores as their accuracy): a new version whose
tau nobody re-chose for the labour may ask people no more than the labour demand, or without one than the deployed
version (`check_labour`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
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
    current_fused_test: float | None = None  # expected accuracy with people on the test split (H-CNN)
    new_fused_test: float | None = None
    first_test: float | None = None  # the first deployed version's test score (the drift check's reference)
    current_labour: float | None = None  # expected labour (Eq. 13) where the fused accuracy is judged, when tau
    new_labour: float | None = None  # was not re-chosen for the labour (`check_labour`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict_logits(model, x).argmax(axis=1) == y)) if len(y) else float("nan")


def accuracy_score(model: Any, labelled: Any) -> float:
    """H-CNN's metric: model-only accuracy on a set with `.x` and `.y`."""
    return _accuracy(model, labelled.x, labelled.y)


Score = Callable[[Any, Any], float]


def paired_margin(current: np.ndarray, new: np.ndarray, weights: np.ndarray | None = None, *, z: float) -> float:
    """`z` standard errors of the (weighted) mean of new - current over the same samples: how far a new model can
    fall short by chance alone. Paired, since both models answer the same samples and what they share cancels;
    weighted like the field set (an audited frame stands for 1 / audit_share frames, so a few carry a lot)."""
    diff = np.asarray(new, np.float64) - np.asarray(current, np.float64)
    if z <= 0.0 or diff.size < 2:
        return 0.0
    w = np.ones_like(diff) if weights is None else np.asarray(weights, np.float64)
    total = float(w.sum())
    mean = float((w * diff).sum()) / total
    return z * float(np.sqrt((w ** 2 * (diff - mean) ** 2).sum())) / total


def check(current: Any, new: Any, holdout: HumanSet | Any, test: Split | Any, *, tolerance: float,
          min_holdout: int, score: Score = accuracy_score, metric: str = "accuracy",
          trade: float = 0.0, holdout_margin: float = 0.0) -> Acceptance:
    """Accept when new >= current - tolerance on both sets (on the held-out set, - `holdout_margin` when that is
    more: its noise, `paired_margin`); too small a held-out set is a refusal, not a pass. A field unlike the
    training data (issue 18) is learned at a small cost on the original test split: up to `trade` of it may be
    lost, never more than the held-out human labels (the field) gained."""
    cur_h, new_h = score(current, holdout), score(new, holdout)
    cur_t, new_t = score(current, test), score(new, test)
    reasons = []
    gain = 0.0
    if len(holdout) < min_holdout:
        reasons.append(f"only {len(holdout)} held-out human-labelled samples (need {min_holdout})")
    elif new_h < cur_h - max(tolerance, holdout_margin):
        reasons.append(f"held-out human {metric} fell from {cur_h:.4f} to {new_h:.4f}{_beyond(holdout_margin)}")
    else:
        gain = new_h - cur_h
    if new_t < cur_t - max(tolerance, min(trade, gain)):
        reasons.append(f"original test {metric} fell from {cur_t:.4f} to {new_t:.4f}")
    return Acceptance(not reasons, cur_h, new_h, len(holdout), cur_t, new_t, len(test), "; ".join(reasons), metric)


def _beyond(margin: float) -> str:
    return f" (more than its noise, {margin:.4f})" if margin > 0.0 else ""


def check_fused(verdict: Acceptance, current: float, new: float, *, tolerance: float,
                demand: float | None = None, judged_on: str = "the original test split",
                margin: float = 0.0) -> Acceptance:
    """Add the H-DNN check: the new model with its tau and temperature must not be expected to do worse with
    people than the deployed one (a model can gain model-only accuracy and still lose where the gate routes).
    A retrain that sends fewer samples to people, or a re-search that trades accuracy above the demand for less
    labour and compute, need only keep what is demanded: `demand` (Eq. 14's A) lowers the bar to
    min(current, demand). `margin` is the comparison's noise (`paired_margin`), allowed when more than the tolerance.
    Asking people more buys fused accuracy, so labour is held level: with a known labour demand the pipeline
    re-gates both for it when the field allows (`field.at_equal_labour`); otherwise `check_labour` refuses a new
    version that asks people more than the demand, or without one than the deployed version."""
    reason = verdict.reason
    bar = current if demand is None else min(current, demand)
    if new < bar - max(tolerance, margin):
        reason = "; ".join(filter(None, [reason, f"expected fused accuracy on {judged_on} fell from "
                                                 f"{current:.4f} to {new:.4f}"
                                                 + ("" if demand is None else f" (demand {demand:.4f})")
                                                 + _beyond(margin)]))
    return replace(verdict, accepted=not reason, reason=reason, current_fused_test=current, new_fused_test=new)


def check_drift(verdict: Acceptance, first: float, *, tolerance: float, first_version: str) -> Acceptance:
    """The tolerance is a budget over the model's whole lineage, not per retrain: compared only with the current
    model, drops within the tolerance would add up round after round, so the new model's test score may not fall
    more than `tolerance` below the first deployed version's either."""
    reason = verdict.reason
    if verdict.new_test < first - tolerance:
        reason = "; ".join(filter(None, [reason, f"original test {verdict.metric} drifted from {first:.4f} "
                                                 f"(version {first_version}) to {verdict.new_test:.4f}"]))
    return replace(verdict, accepted=not reason, reason=reason, first_test=first)


@dataclass(frozen=True)
class Gate:
    """A version as its gate runs: model, temperature and tau."""

    model: Any
    temperature: float
    tau: float


def frame_labour(kind: str, gate: Gate, labelled: Any) -> tuple[np.ndarray, np.ndarray]:
    """(each frame's labour, Eq. 13's L0 / L_max and 0 where the model answers alone; whether people are asked) at
    `gate`, through the runtime kind's confidence and difficulty, as `field.choose_tau` counts labour."""
    from hgen.runtime.hdnn import FusionParams, get_kind, needs_human
    from hgen.runtime.labour import DifficultyEstimator, labour_per_sample, labour_ratio

    runtime, params = get_kind(kind), FusionParams(gate.temperature)
    outputs = predict_logits(gate.model, labelled.x)
    confidence = runtime.confidence(outputs, params)
    asked = needs_human(confidence, gate.tau)
    l0 = labour_per_sample(runtime.difficulty(outputs, confidence, params, DifficultyEstimator()),
                           int(getattr(labelled, "m", 3)))
    return np.where(asked, np.asarray(l0, np.float64) * labour_ratio(1.0, 1), 0.0), asked


def expected_labour(kind: str, gate: Gate, labelled: Any) -> float:
    """Expected labour (Eq. 13) at `gate` on `labelled`, weighted like it (importance weights of a field set)."""
    per_frame, _ = frame_labour(kind, gate, labelled)
    return float(np.average(per_frame, weights=getattr(labelled, "weights", None)))


@dataclass(frozen=True)
class Labour:
    """The deployed and the new version's expected labour (Eq. 13) and share of frames sent to people on the set the
    fused accuracy is judged on (weighted like it), and `margin`, the labour comparison's paired noise."""

    current: float
    new: float
    current_share: float
    new_share: float
    margin: float = 0.0


def compare_labour(kind: str, current: Gate, new: Gate, labelled: Any, *, noise_se: float) -> Labour:
    """Both versions' labour at the gates they run with, on the same (weighted) frames."""
    weights = getattr(labelled, "weights", None)
    before, asked_before = frame_labour(kind, current, labelled)
    after, asked_after = frame_labour(kind, new, labelled)
    return Labour(float(np.average(before, weights=weights)), float(np.average(after, weights=weights)),
                  float(np.average(asked_before, weights=weights)), float(np.average(asked_after, weights=weights)),
                  paired_margin(before, after, weights, z=noise_se))


def check_labour(verdict: Acceptance, labour: Labour, *, tolerance: float,
                 demand: float | None = None) -> Acceptance:
    """A new version running at a tau nobody re-chose for the labour may ask people no more than they agreed to:
    without a known labour demand, what they give today; with one, the demand (or today's labour, if more). Its gate
    asking more (expected labour, Eq. 13, up by more than the tolerance or its noise, `margin`) is refused, since
    fused accuracy bought with more frames for people is no better model (every frame asked scores as the people's
    accuracy). One that asks no more is then judged on fused accuracy within that labour."""
    reason = verdict.reason
    allowed = labour.current if demand is None else max(labour.current, demand)
    if labour.new > allowed + max(tolerance, labour.margin):
        reason = "; ".join(filter(None, [reason, _asks_more(labour, demand)]))
    return replace(verdict, accepted=not reason, reason=reason, current_labour=labour.current,
                   new_labour=labour.new)


def _asks_more(labour: Labour, demand: float | None) -> str:
    change = (f"expected labour (Eq. 13) {labour.current:.4f} -> {labour.new:.4f}, share of frames sent to people "
              f"{labour.current_share:.1%} -> {labour.new_share:.1%}{_beyond(labour.margin)}")
    if demand is None:
        return (f"without a labour demand a new version may ask people no more than the deployed one, and it asks "
                f"more: {change} (set the model's labour_demand, or its compile_config, to let a retrain re-choose "
                f"tau for a demand)")
    return (f"the new version asks people more than the labour demand {demand:.4f} allows: {change} (too few "
            f"held-out field labels to re-choose tau for the demand: retrain.field.min_samples)")
