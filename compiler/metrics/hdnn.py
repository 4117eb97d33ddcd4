"""A, T and L of an H-DNN on a labelled split, measured through the runtime gate and fusion (one source of truth).

The crowd is asked about every sample once, before any threshold is applied; the gate then decides which answers
are used. A sweep over tau therefore compares thresholds on the very same people, and re-running is cheap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.metrics.formulas import latency_ms
from hgen.hub.crowd import CrowdAnswers, SimulatedCrowd
from hgen.runtime.calibration import softmax
from hgen.runtime.hdnn import DEFAULT_KIND, FUSION_LAMBDA_DEFAULT, FusionParams, check_tau, get_kind, needs_human
from hgen.runtime.hdnn.cnn import NO_ANSWER
from hgen.runtime.labour import DifficultyEstimator, labour_per_sample, labour_ratio, uncertainty_features

DIFFICULTY_FIT_SAMPLES = 3000


@dataclass(frozen=True)
class HDNNEvaluation:
    """Measured on one split. Accuracies and shares are fractions; `simulated` flags simulated annotators."""

    tau: float
    m: int
    samples: int
    accuracy_model: float
    accuracy_fused: float
    gated: int
    annotations: int
    share_to_people: float
    labour: float
    extra_latency_ms: float
    latency_ms: float
    simulated: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def hardness_proxy(probs: np.ndarray) -> np.ndarray:
    """Simulated people find hard what is ambiguous in the image; the model's normalised entropy stands in for it."""
    return uncertainty_features(probs)[:, 1]


def ask_crowd(crowd: SimulatedCrowd, logits: np.ndarray, labels: np.ndarray, m: int,
              temperature: float = 1.0) -> CrowdAnswers:
    """Every sample's answers from m simulated people (used later through the gate)."""
    if m < 1:
        raise InvalidArgumentError(f"the number of annotators m must be >= 1, got {m}")
    return crowd.annotate(labels, m, hardness_proxy(softmax(logits, temperature)))


def fit_difficulty(crowd: SimulatedCrowd, logits: np.ndarray, labels: np.ndarray, m: int, temperature: float,
                   samples: int = DIFFICULTY_FIT_SAMPLES) -> DifficultyEstimator:
    """Fit the difficulty estimator on up to 3,000 samples with known truth (Eq. 3's d)."""
    logits, labels = logits[:samples], labels[:samples]
    answers = ask_crowd(crowd, logits, labels, m, temperature)
    wrong = (answers.labels != labels[:, None]).astype(np.int64)
    return DifficultyEstimator.fit(softmax(logits, temperature), wrong)


def evaluate_hdnn(logits: np.ndarray, labels: np.ndarray, answers: CrowdAnswers, *, tau: float, temperature: float,
                  fusion_lambda: float = FUSION_LAMBDA_DEFAULT, difficulty: DifficultyEstimator | None = None,
                  t_infer_ms: float = 0.0, kind: str = DEFAULT_KIND,
                  unfamiliar: np.ndarray | None = None) -> HDNNEvaluation:
    """Gate at tau, fuse the gated samples' answers, and count accuracy, latency and labour. `unfamiliar`: samples
    the device's familiarity check (`hgen.runtime.familiarity`) sends to people whatever their confidence."""
    tau = check_tau(tau)
    labels = np.asarray(labels)
    if answers.labels.shape[0] != labels.shape[0]:
        raise InvalidArgumentError(f"{answers.labels.shape[0]} rows of answers for {labels.shape[0]} samples")
    hdnn = get_kind(kind)
    params = FusionParams(temperature, fusion_lambda)
    confidence = hdnn.confidence(logits, params)
    gate = needs_human(confidence, tau)
    if unfamiliar is not None:
        gate = gate | np.asarray(unfamiliar, bool)
    used = np.where(gate[:, None], answers.labels, NO_ANSWER)
    fused = hdnn.fuse(logits, used, params)
    m = answers.labels.shape[1]
    d = (hdnn.difficulty(logits[gate], confidence[gate], params, difficulty or DifficultyEstimator()) if gate.any()
         else np.zeros(0))
    extra_total_ms = float(answers.sample_latency_s[gate].sum() * 1000.0)
    n = labels.shape[0]
    return HDNNEvaluation(
        tau=tau, m=m, samples=n,
        accuracy_model=float(np.mean(hdnn.predict(logits, params) == labels)),
        accuracy_fused=float(np.mean(fused == labels)),
        gated=int(gate.sum()), annotations=int(gate.sum()) * m, share_to_people=float(gate.mean()),
        labour=labour_ratio(float(np.sum(labour_per_sample(d, m))), n),
        extra_latency_ms=extra_total_ms / n,
        latency_ms=latency_ms(t_infer_ms, extra_total_ms, n),
        simulated=answers.simulated,
    )


@dataclass(frozen=True)
class TauSweep:
    """Fused accuracy and labour of every threshold at which the gate changes (plus any extra ones), ascending."""

    taus: np.ndarray
    correct: np.ndarray
    labour: np.ndarray
    samples: int
    labour_square: np.ndarray | None = None  # mean of each sample's squared labour share, per threshold
    extra_ms: np.ndarray | None = None  # people's time per sample (Eq. 10's extra term), per threshold
    extra_ms_square: np.ndarray | None = None

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct / self.samples

    def labour_upper(self, confidence: float) -> np.ndarray:
        """One-sided upper confidence bound of each threshold's labour (a mean over samples: normal approximation).

        Labour on new data scatters around the split's value like accuracy does; a tau chosen to sit just under L_c
        on the search split lands above it about half the time, so the choice can be made on this bound instead.
        """
        return _upper(self.labour, self.labour_square, self.samples, confidence)

    def within(self, labour_budget: float, latency_budget_ms: float, t_infer_ms: float,
               confidence: float) -> np.ndarray:
        """Thresholds whose labour and latency upper bounds meet the budgets. When inference alone is over the
        latency budget no threshold can mend that, so labour alone decides."""
        fast = self.latency_upper(t_infer_ms, confidence) <= latency_budget_ms
        return (self.labour_upper(confidence) <= labour_budget) & (fast if fast.any() else True)

    def latency_upper(self, t_infer_ms: float, confidence: float) -> np.ndarray:
        """Eq. 10's latency (inference plus people's time per sample) of each threshold, as an upper bound."""
        if self.extra_ms is None:
            return np.full(self.taus.shape, t_infer_ms)
        return t_infer_ms + _upper(self.extra_ms, self.extra_ms_square, self.samples, confidence)


def _upper(mean: np.ndarray, square: np.ndarray | None, n: int, confidence: float) -> np.ndarray:
    """One-sided normal-approximation upper bound of per-threshold means, from their mean squares."""
    if confidence <= 0.0 or square is None:
        return mean
    variance = np.clip(square - mean ** 2, 0.0, None)
    return mean + NormalDist().inv_cdf(confidence) * np.sqrt(variance / n)


@dataclass(frozen=True)
class TauChoice:
    """The refined threshold, the proposal it started from, and whether its labour meets the budget."""

    tau: float
    proposal: float
    accuracy: float
    labour: float
    meets_labour: bool


def sweep_tau(logits: np.ndarray, labels: np.ndarray, answers: CrowdAnswers, *, temperature: float,
              fusion_lambda: float = FUSION_LAMBDA_DEFAULT, difficulty: DifficultyEstimator | None = None,
              extra_taus: tuple[float, ...] = (), kind: str = DEFAULT_KIND) -> TauSweep:
    """What `evaluate_hdnn` measures, for all thresholds at once: each sample's outcome with and without people and
    its labour depend on that sample only, so sorting by confidence turns every threshold into a prefix sum.

    Candidates: 0, 1, every distinct confidence (tau = c gates the samples below c) and `extra_taus`.
    """
    labels = np.asarray(labels)
    hdnn, params = get_kind(kind), FusionParams(temperature, fusion_lambda)
    confidence = np.asarray(hdnn.confidence(logits, params), dtype=np.float64)
    alone = hdnn.fuse(logits, np.full_like(answers.labels, NO_ANSWER), params) == labels
    helped = hdnn.fuse(logits, answers.labels, params) == labels
    l0 = labour_per_sample(hdnn.difficulty(logits, confidence, params, difficulty or DifficultyEstimator()),
                           answers.labels.shape[1])
    order = np.argsort(confidence, kind="stable")
    taus = np.unique(np.clip(np.concatenate([confidence, [0.0, 1.0], [check_tau(t) for t in extra_taus]]), 0, 1))
    gated = np.searchsorted(confidence[order], taus, side="left")  # how many samples have c < tau
    gain = np.concatenate([[0], np.cumsum(helped[order].astype(np.int64) - alone[order])])
    share = np.asarray(l0, dtype=np.float64)[order] * labour_ratio(1.0, 1)  # each sample's labour if it is asked
    spent = np.concatenate([[0.0], np.cumsum(share)])
    square = np.concatenate([[0.0], np.cumsum(share ** 2)])
    wait = np.asarray(answers.sample_latency_s, dtype=np.float64)[order] * 1000.0
    waited = np.concatenate([[0.0], np.cumsum(wait)])
    waited_square = np.concatenate([[0.0], np.cumsum(wait ** 2)])
    n = labels.shape[0]
    return TauSweep(taus, int(alone.sum()) + gain[gated], spent[gated] / n, n, square[gated] / n,
                    waited[gated] / n, waited_square[gated] / n)


def refine_tau(sweep: TauSweep, proposal: float, labour_budget: float, confidence: float = 0.0, *,
               latency_budget_ms: float = math.inf, t_infer_ms: float = 0.0) -> TauChoice:
    """The most accurate threshold whose labour meets the budget and whose latency (Eq. 10: inference plus people's
    time, which grows with tau) meets T_d; ties go to less labour, then to the one nearest the proposal. With
    `confidence` > 0 the upper bounds at that confidence must meet them (a margin against the split's noise). If none
    does (only possible for a budget below zero labour), the least-labour threshold, most accurate among those, is
    returned with `meets_labour=False`, so the caller sees the budget is missed."""
    meets = sweep.within(labour_budget, latency_budget_ms, t_infer_ms, confidence)
    pool = np.flatnonzero(meets) if meets.any() else np.flatnonzero(sweep.labour == sweep.labour.min())
    distance = np.abs(sweep.taus[pool] - proposal)
    best = pool[np.lexsort((distance, sweep.labour[pool], -sweep.correct[pool]))[0]]
    return TauChoice(float(sweep.taus[best]), float(proposal), float(sweep.accuracy[best]), float(sweep.labour[best]),
                     bool(meets.any()))
