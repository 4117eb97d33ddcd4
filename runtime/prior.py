"""The class mix a device sees (SMART): a runtime prior over classes, its change detector, and the re-weighting.

A classifier's calibrated probabilities p(y|x) assume the class mix it was trained on (balanced here). When the
stream is skewed, Bayes' rule with the runtime prior q gives p'_i = p_i q_i / sum_j p_j q_j. The prior is the class
histogram of a sliding window of labels the device trusts (confident predictions, people's answers), mixed with the
uniform distribution so no class ever reaches zero (a class that returns can still win). A change of mix is the L1
distance between the histograms of two consecutive, non-overlapping windows (SMART Eq. 8 with absolute values)
above a threshold; the same distance to the uniform mix decides whether the prior is applied at all.

Numpy only: the device agent, the compiler and the benchmarks share it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from hgen.runtime.errors import InvalidInputError


@dataclass(frozen=True)
class PriorSettings:
    """window: labels per estimate; threshold: L1 change that counts as a new mix (0..2); smoothing: weight of the
    uniform distribution mixed in (0 < s <= 1, so every class keeps at least s / K)."""

    window: int = 200
    threshold: float = 0.5
    smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.window < 1:
            raise InvalidInputError(f"prior window must be >= 1, got {self.window}")
        if not 0.0 <= self.threshold <= 2.0:
            raise InvalidInputError(f"prior change threshold must be in [0, 2], got {self.threshold}")
        if not 0.0 < self.smoothing <= 1.0:
            raise InvalidInputError(f"prior smoothing must be in (0, 1], got {self.smoothing}")


@dataclass(frozen=True)
class MixChange:
    """A detected change of class mix: when (labels observed so far), how far (L1) and the two histograms."""

    observed: int
    distance: float
    before: tuple[float, ...]
    after: tuple[float, ...]


def reweight(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """p_i q_i / sum_j p_j q_j, row-wise (probs [n, K], prior [K] with every entry > 0)."""
    probs = np.asarray(probs, dtype=np.float64)
    prior = _check_prior(prior, probs.shape[-1])
    weighted = probs * prior
    return weighted / weighted.sum(axis=-1, keepdims=True)


def shift_logits(logits: np.ndarray, prior: np.ndarray, temperature: float) -> np.ndarray:
    """Logits z' with softmax(z' / T) = reweight(softmax(z / T), q): z' = z + T log q.

    Working on logits lets every consumer of the model output (gate, difficulty, fusion, the sample people see)
    use the re-weighted probabilities unchanged. The dtype of `logits` is kept.
    """
    logits = np.asarray(logits)
    if temperature <= 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    prior = _check_prior(prior, logits.shape[-1])
    return (logits + temperature * np.log(prior)).astype(logits.dtype, copy=False)


def l1_distance(a: np.ndarray, b: np.ndarray) -> float:
    """SMART Eq. 8 with absolute values: sum_i |a_i - b_i| (0 = same mix, 2 = disjoint classes)."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).sum())


def _check_prior(prior: np.ndarray, classes: int) -> np.ndarray:
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (classes,) or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
        raise InvalidInputError(f"prior must be {classes} positive finite weights, got shape {prior.shape}")
    return prior


class PriorEstimator:
    """Sliding-window class histogram, smoothed, with change detection between consecutive windows.

    `observe(label)` is O(1). The prior is uniform until the first window is full, so a cold device behaves as
    without the prior. Not thread-safe: the caller serialises (the agent holds its lock).
    """

    def __init__(self, classes: int, settings: PriorSettings = PriorSettings()) -> None:
        if classes < 2:
            raise InvalidInputError(f"a class prior needs >= 2 classes, got {classes}")
        self.classes = classes
        self.settings = settings
        self.observed = 0
        self.changes: list[MixChange] = []
        self._recent: deque[int] = deque(maxlen=settings.window)
        self._counts = np.zeros(classes, np.int64)
        self._block = np.zeros(classes, np.int64)  # labels of the current non-overlapping window
        self._previous: np.ndarray | None = None  # histogram of the last completed window

    def observe(self, label: int) -> MixChange | None:
        """Count one trusted label; returns the change when this label completes a window that differs enough."""
        label = int(label)
        if not 0 <= label < self.classes:
            raise InvalidInputError(f"label must be in 0..{self.classes - 1}, got {label}")
        if len(self._recent) == self._recent.maxlen:
            self._counts[self._recent[0]] -= 1
        self._recent.append(label)
        self._counts[label] += 1
        self._block[label] += 1
        self.observed += 1
        if self.observed % self.settings.window:
            return None
        current = self._block / self.settings.window
        self._block = np.zeros(self.classes, np.int64)
        previous, self._previous = self._previous, current
        if previous is None:
            return None
        distance = l1_distance(previous, current)
        if distance <= self.settings.threshold:
            return None
        change = MixChange(self.observed, distance, tuple(previous.tolist()), tuple(current.tolist()))
        self.changes.append(change)
        return change

    @property
    def ready(self) -> bool:
        return self.observed >= self.settings.window

    def histogram(self) -> np.ndarray:
        """Class shares among the last `window` labels (zeros before any)."""
        return self._counts / max(1, len(self._recent))

    def skewed(self) -> bool:
        """A full window whose mix differs from the balanced training mix by more than the change threshold.

        The trusted labels of a balanced stream are not balanced themselves (the model is confident more often on
        easy classes); re-weighting by that bias costs accuracy, so a mix within the threshold of uniform is
        treated as uniform, the same test as a change between two windows.
        """
        uniform = np.full(self.classes, 1.0 / self.classes)
        return self.ready and l1_distance(self.histogram(), uniform) > self.settings.threshold

    def prior(self) -> np.ndarray:
        """(1 - s) histogram + s / K when `skewed`, else uniform; every entry >= s / K > 0."""
        uniform = np.full(self.classes, 1.0 / self.classes)
        if not self.skewed():
            return uniform
        s = self.settings.smoothing
        return (1.0 - s) * self.histogram() + s * uniform
