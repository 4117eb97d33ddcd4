"""Learning the field (issue 18): a deployed model meets conditions its training data never showed (noise, low
light, low resolution), so the gate it was calibrated with on clean validation data no longer fits.

People's labels are the only view of the field the hub has, and a biased one: the gate sends the frames the model
is unsure of, plus a small random audit of the confident ones (the agent's `gating.audit_share`). Weighting each
audited frame by 1 / audit_share turns the held-out labels into an unbiased sample of the field (the frames people
never see are most of the stream), on which this module

- re-fits the temperature (Eq. 2) and re-chooses tau: the most accurate gate whose labour (Eq. 13) meets the
  labour demand on the field, so people are asked less as the model learns;
- scores the expected accuracy with people for the acceptance check, on the field rather than the original test
  split (a model that learns the field may lose a little on the clean test split; `accept.check` trades up to
  `field.trade` of it for an equal gain on held-out field labels).

A sample's audit is recognised without a device flag: its stored confidence was at or above the tau of the
version that sent it. With fewer than `field.min_samples` held-out field labels nothing is re-fitted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from hgen.hub.config import FieldConfig
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.runtime.bundle.manifest import Manifest
from hgen.runtime.calibration import fit_temperature, softmax
from hgen.runtime.familiarity import Familiarity, unfamiliar_frames
from hgen.runtime.labour import DifficultyEstimator, labour_per_sample, labour_ratio
from sqlalchemy import select


@dataclass(frozen=True)
class FieldSet:
    """Held-out field labels with importance weights (1: sent by the gate; 1 / audit_share: an audited frame)."""

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    m: int = 3  # people per sample, for the labour estimate

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def audited(self) -> int:
        return int((self.weights > 1).sum())



@dataclass(frozen=True)
class Refit:
    """An enhanced model with the temperature and tau re-chosen on the field (the fields `Enhanced` has + tau)."""

    model: Any
    temperature: float
    seconds: float
    train_samples: int
    tau: float
    expected_accuracy: float  # with people at `tau` on the weighted field set
    expected_labour: float  # Eq. 13 at `tau` on the weighted field set
    field_samples: int
    meets_labour: bool
    style: Mapping[str, float] | None = None
    caught_errors: float = float("nan")  # `gate_errors` at `tau` on the weighted field set
    confident_errors: float = float("nan")


def gate_errors(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray, tau: float) -> tuple[float, float]:
    """(the share of the model's field errors its gate sends to people, the share of field frames it gets wrong
    while sure), weighted like the field. A model moved to a field unlike its training data can be confidently
    wrong: its gate then misses most of its errors (label_value_probe's D4: 7.5 % of them were among its 600 least
    confident frames), and labels of the frames it doubts teach less than random ones; more audits find the rest.
    The gate's tau only: the devices' draw of unfamiliar frames is not counted."""
    w = np.asarray(weights, np.float64)
    wrong = probs.argmax(axis=1) != labels
    gated = probs.max(axis=1) < tau
    errors = float((w * wrong).sum())
    caught = float((w * (wrong & gated)).sum()) / errors if errors > 0.0 else 1.0
    return caught, float((w * (wrong & ~gated)).sum()) / float(w.sum())


def audit_weight(audit_share: float) -> int:
    return max(1, round(1.0 / audit_share))


def importance_weights(confidence: np.ndarray, sent_tau: np.ndarray, audit_share: float,
                       unfamiliar: np.ndarray | None = None, unfamiliar_share: float = 1.0) -> np.ndarray:
    """1 for a frame under the sending version's tau (people see every such frame); for a confident frame,
    1 / unfamiliar_share when it was unlike that version's training images, else 1 / audit_share (people see
    that share of each)."""
    confident = np.asarray(confidence) >= np.asarray(sent_tau)
    unlike = np.zeros(confident.shape, bool) if unfamiliar is None else np.asarray(unfamiliar, bool)
    weights = np.where(unlike, audit_weight(unfamiliar_share), audit_weight(audit_share))
    return np.where(confident, weights, 1).astype(np.int64)


def sent_unfamiliar(x: np.ndarray, versions: Sequence[str],
                    familiarity: Mapping[str, Familiarity | None]) -> np.ndarray:
    """Which held-out images the version that sent each found unfamiliar (its manifest's ranges; the hub
    recomputes it from the image rather than trusting a device's flag)."""
    flags = np.zeros(len(versions), bool)
    sent_by = np.asarray(versions, dtype=object)
    for version in set(versions):
        rows = sent_by == version
        flags[rows] = unfamiliar_frames(familiarity.get(version), x[rows])
    return flags


def sent_gates(kb: KnowledgeBase, sample_ids: Sequence[str]) -> dict[str, tuple[str, float, int]]:
    """sample id -> (bundle version that sent it, its confidence then, people asked) from the knowledge base."""
    found: dict[str, tuple[str, float, int]] = {}
    ids = list(sample_ids)
    with kb.session() as s:
        for start in range(0, len(ids), 500):
            rows = s.execute(select(Sample.id, Sample.bundle_version, Sample.confidence, Sample.m)
                             .where(Sample.id.in_(ids[start:start + 500]))).all()
            found.update({r[0]: (r[1], float(r[2]), int(r[3])) for r in rows})
    return found


def field_set(kb: KnowledgeBase, holdout: Any, taus: Mapping[str, float], audit_share: float,
              familiarity: Mapping[str, Familiarity | None] | None = None,
              unfamiliar_share: float = 1.0) -> FieldSet:
    """The held-out human labels (a `HumanSet`) weighted by how the gate of the version that sent each chose it
    (`familiarity`: each version's ranges, None or missing: no check; the devices send `unfamiliar_share` of the
    confident frames outside them). A sample of an unknown version counts once (as if the gate sent it)."""
    gates = sent_gates(kb, holdout.sample_ids)
    sent = [gates.get(s, ("", 0.0, 3)) for s in holdout.sample_ids]
    versions = [version for version, _, _ in sent]
    confidence = np.array([c for _, c, _ in sent], np.float64)
    sent_tau = np.array([taus.get(v, np.inf) for v in versions], np.float64)
    unfamiliar = None if familiarity is None else sent_unfamiliar(holdout.x, versions, familiarity)
    people = [gates[s][2] for s in holdout.sample_ids if s in gates]
    weights = importance_weights(confidence, sent_tau, audit_share, unfamiliar, unfamiliar_share)
    return FieldSet(holdout.x, holdout.y, weights,
                    int(np.median(people)) if people else 3)


def labour_upper(share: np.ndarray, weights: np.ndarray, gated: np.ndarray, confidence: float) -> np.ndarray:
    """Each gate's labour (Eq. 13, weighted mean of the frames' labour shares `share`, in confidence order; a gate
    spends on the first `gated` frames), raised to a one-sided upper bound at `confidence`. An audited frame stands
    for 1 / audit_share frames, so a few of them carry most of the field and the estimate's spread is that of a
    weighted mean: Var = sum(w^2 (x - mean)^2) / W^2, x a frame's share if gated, else 0."""
    w = weights.astype(np.float64)
    total, w2 = float(w.sum()), float((w ** 2).sum())
    mean = np.concatenate([[0.0], np.cumsum(w * share)])[gated] / total
    if confidence <= 0.0:
        return mean
    linear = np.concatenate([[0.0], np.cumsum(w ** 2 * share)])[gated]
    square = np.concatenate([[0.0], np.cumsum(w ** 2 * share ** 2)])[gated]
    variance = np.clip(square - 2.0 * mean * linear + mean ** 2 * w2, 0.0, None) / total ** 2
    return mean + NormalDist().inv_cdf(confidence) * np.sqrt(variance)


def choose_tau(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, labour_demand: float,
               accuracy_floor: float, human_accuracy: float, m: int,
               labour_confidence: float = 0.0) -> tuple[float, float, float, bool]:
    """(tau, expected accuracy with people, labour, meets the labour demand) on the weighted set, people right with
    `human_accuracy`. Accuracy comes first (Eq. 14's A is what the product promises): among gates that keep the
    expected accuracy at `accuracy_floor` or above, the most accurate one within the labour demand, else the one
    with the least labour (the demand is missed and reported so); if none keeps the floor, the most accurate.
    With `labour_confidence` > 0 a gate meets the demand by its labour's upper bound (few audits: a wide one)."""
    confidence = probs.max(axis=1)
    right = (probs.argmax(axis=1) == labels).astype(np.float64)
    l0 = np.asarray(labour_per_sample(DifficultyEstimator().difficulty(probs), m), np.float64)
    order = np.argsort(confidence, kind="stable")
    w = weights[order].astype(np.float64)
    total = float(w.sum())
    ordered = confidence[order]
    # Candidates halfway between neighbours: a sample stands for the frames around its confidence (an audited one
    # for 1/audit_share of them), so a tau at a sample would gate half of them while counting none; picked against
    # the labour demand, that undercount is the one chosen, and the field then spends more than the demand.
    taus = np.unique(np.concatenate([(ordered[:-1] + ordered[1:]) / 2.0, [0.0, 1.0]]))
    gated = np.searchsorted(ordered, taus, side="left")  # tau gates the samples below it
    gain = np.concatenate([[0.0], np.cumsum(w * (human_accuracy - right[order]))])
    accuracy = np.round((float((w * right[order]).sum()) + gain[gated]) / total, 12)
    share = l0[order] * labour_ratio(1.0, 1)
    labour = labour_upper(share, weights[order], gated, 0.0)
    upper = labour if labour_confidence <= 0.0 else labour_upper(share, weights[order], gated, labour_confidence)
    keeps, meets = accuracy >= accuracy_floor - 1e-12, upper <= labour_demand
    if (keeps & meets).any():
        pool = np.flatnonzero(keeps & meets)
        best = pool[np.lexsort((labour[pool], -accuracy[pool]))[0]]
    elif keeps.any():
        pool = np.flatnonzero(keeps)
        best = pool[np.lexsort((-accuracy[pool], labour[pool]))[0]]
    else:
        best = int(np.lexsort((labour, -accuracy))[0])
    return float(taus[best]), float(accuracy[best]), float(labour[best]), bool(meets[best])


def refit(enhanced: Any, field: FieldSet, config: FieldConfig, *, labour_demand: float | None,
          accuracy_floor: float, human_accuracy: float) -> Any:
    """`enhanced` with its temperature re-fitted on the field, and tau re-chosen for `labour_demand` (keeping the
    expected accuracy with people at `accuracy_floor`) when a demand is known; unchanged when the field set is too
    small or re-fitting is off."""
    from hgen.compiler.train import predict_logits

    if not config.recalibrate or len(field) < config.min_samples:
        return enhanced
    logits = predict_logits(enhanced.model, field.x)
    rows = np.repeat(np.arange(len(field)), field.weights)
    temperature = fit_temperature(logits[rows], field.y[rows])
    if labour_demand is None:
        return Refit(enhanced.model, temperature, enhanced.seconds, enhanced.train_samples, float("nan"),
                     float("nan"), float("nan"), len(field), True, enhanced.style)
    probs = softmax(logits, temperature)
    tau, accuracy, labour, meets = choose_tau(probs, field.y, field.weights,
                                              labour_demand=labour_demand * config.labour_margin,
                                              accuracy_floor=accuracy_floor, human_accuracy=human_accuracy,
                                              m=field.m, labour_confidence=config.labour_confidence)
    caught, confident = gate_errors(probs, field.y, field.weights, tau)
    return Refit(enhanced.model, temperature, enhanced.seconds, enhanced.train_samples, tau, accuracy, labour,
                 len(field), meets, enhanced.style, caught, confident)


def refitted_tau(enhanced: Any) -> float | None:
    """The tau a field re-fit chose, or None (the deployed tau stays)."""
    return enhanced.tau if isinstance(enhanced, Refit) and not np.isnan(enhanced.tau) else None


def tau_after(enhanced: Any, deployed_tau: float) -> float:
    """The tau the retrained model will run with: the field's choice, else the deployed one."""
    chosen = refitted_tau(enhanced)
    return deployed_tau if chosen is None else chosen


def field_metrics(enhanced: Any) -> dict[str, Any]:
    """What the field re-fit chose, for the run's metrics (empty when nothing was re-fitted)."""
    if not isinstance(enhanced, Refit):
        return {}
    return {"field": {"tau": _number(enhanced.tau), "temperature": enhanced.temperature,
                      "expected_fused": _number(enhanced.expected_accuracy),
                      "expected_labour": _number(enhanced.expected_labour),
                      "meets_labour": enhanced.meets_labour, "samples": enhanced.field_samples,
                      "caught_errors": _number(enhanced.caught_errors),
                      "confident_errors": _number(enhanced.confident_errors)}}


def _number(value: float) -> float | None:
    """None for what was not measured (NaN), which JSON cannot hold."""
    return None if np.isnan(value) else value


@dataclass(frozen=True)
class _Deployed:
    """The deployed model in the shape `refit` takes (what `Enhanced` has)."""

    model: Any
    temperature: float
    seconds: float = 0.0
    train_samples: int = 0
    style: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Compared:
    """Expected accuracy with people on the field of the deployed and the retrained model, and the comparison's
    noise (`accept.paired_margin` of their per-frame outcomes, weighted like the field)."""

    current: float
    new: float
    margin: float


def at_equal_labour(current_model: Any, current_temperature: float, enhanced: Refit, field: FieldSet,
                    config: FieldConfig, *, labour_demand: float, human_accuracy: float,
                    noise_se: float = 0.0) -> Compared:
    """Expected accuracy with people on the field of the deployed and the retrained model, each with its gate
    re-fitted for the same labour demand: the acceptance check compares models, not how much labour the deployed
    gate happened to spend (in a shifted field it may spend far more than the demand). `noise_se` standard errors
    of the paired difference are the comparison's margin."""
    from hgen.hub.retrain.accept import paired_margin
    from hgen.hub.retrain.kinds.cnn import fused_outcomes

    current = refit(_Deployed(current_model, current_temperature), field, config, labour_demand=labour_demand,
                    accuracy_floor=0.0, human_accuracy=human_accuracy)
    margin = 0.0
    if noise_se > 0.0 and isinstance(current, Refit):
        before = fused_outcomes(current_model, current.temperature, current.tau, field, human_accuracy)
        after = fused_outcomes(enhanced.model, enhanced.temperature, enhanced.tau, field, human_accuracy)
        margin = paired_margin(before, after, field.weights, z=noise_se)
    return Compared(float(current.expected_accuracy), enhanced.expected_accuracy, margin)


def learned_familiarity(manifest: Manifest, trained_on: np.ndarray) -> Manifest:
    """The manifest with its familiarity ranges widened by the field images a published retrain learned: the device
    then lets the model's confidence decide for frames like them (the acceptance check has just judged the model on
    held-out field labels). Unchanged without the check."""
    if manifest.familiarity is None or len(trained_on) == 0:
        return manifest
    return manifest.model_copy(update={"familiarity": manifest.familiarity.widened(trained_on)})
