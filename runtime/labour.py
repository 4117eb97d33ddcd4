"""Human labour: per-sample cost (paper Eq. 3), the labour ratio L (Eq. 13) and the difficulty estimator.

The device enforces the labour budget per batch with the same functions the search uses to score candidates.

Units: a sample's difficulty `d` is the number of operations a person needs for it, in [1, 3] (one glance and a
click for an easy sample, up to zoom + compare + answer for a hard one). L_max = M x 4 participants x 3 operations,
so L is the share of the most labour the crowd could ever spend on M samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hgen.runtime.errors import InvalidInputError

MIN_OPERATIONS = 1.0
MAX_OPERATIONS = 3.0
MAX_PARTICIPANTS = 4


def labour_per_sample(difficulty: float | np.ndarray, m: int) -> float | np.ndarray:
    """Eq. 3: L0 = d * m (operations for one sample answered by m people)."""
    if m < 1:
        raise InvalidInputError(f"the number of annotators m must be >= 1, got {m}")
    return np.asarray(difficulty, dtype=np.float64) * m if isinstance(difficulty, np.ndarray) else difficulty * m


def operations_per_frame(share: float) -> float:
    """Eq. 13 turned round: the operations a labour demand L = `share` allows per frame (L x L_max per sample)."""
    return share * MAX_PARTICIPANTS * MAX_OPERATIONS


def labour_ratio(total_l0: float, num_samples: int, participants: int = MAX_PARTICIPANTS,
                 operations: float = MAX_OPERATIONS) -> float:
    """Eq. 13: L = sum(L0) / L_max with L_max = M * participants * operations."""
    if num_samples < 1:
        raise InvalidInputError(f"the number of samples M must be >= 1, got {num_samples}")
    return float(total_l0) / (num_samples * participants * operations)


def uncertainty_features(probs: np.ndarray) -> np.ndarray:
    """Features of the model's calibrated output that predict how hard a sample is for people.

    margin (top-1 minus top-2), normalised entropy and top-1 probability: [n, 3].
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise InvalidInputError(f"probabilities must be [n, classes>=2], got shape {probs.shape}")
    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2]
    entropy = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=1) / np.log(probs.shape[1])
    return np.stack([margin, entropy, ordered[:, -1]], axis=1)


@dataclass(frozen=True)
class DifficultyEstimator:
    """Logistic model: uncertainty features -> probability that an annotator answers wrongly.

    d = 1 + 2 * p_error maps that probability onto [1, 3] operations. The coefficients are stored in the
    bundle so the device computes the same d as the search did.
    """

    coef: tuple[float, ...] = (0.0, 0.0, 0.0)
    intercept: float = -2.0
    fitted_on: int = 0

    def error_probability(self, probs: np.ndarray) -> np.ndarray:
        z = uncertainty_features(probs) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def difficulty(self, probs: np.ndarray) -> np.ndarray:
        return MIN_OPERATIONS + (MAX_OPERATIONS - MIN_OPERATIONS) * self.error_probability(probs)

    def to_dict(self) -> dict[str, object]:
        return {"coef": list(self.coef), "intercept": self.intercept, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DifficultyEstimator:
        return cls(tuple(float(c) for c in data["coef"]), float(data["intercept"]), int(data.get("fitted_on", 0)))

    @classmethod
    def fit(cls, probs: np.ndarray, annotator_wrong: np.ndarray, *, l2: float = 1e-3,
            iterations: int = 50) -> DifficultyEstimator:
        """Fit by Newton-IRLS on samples with known truth (the paper uses 3,000).

        `annotator_wrong` is [n, m] of 0/1 (or -1 for no answer): each answer is one Bernoulli observation.
        """
        x = uncertainty_features(probs)
        wrong = np.asarray(annotator_wrong)
        if wrong.ndim == 1:
            wrong = wrong[:, None]
        if wrong.shape[0] != x.shape[0]:
            raise InvalidInputError(f"{x.shape[0]} samples of features but {wrong.shape[0]} rows of answers")
        rows, cols = np.nonzero(wrong >= 0)
        design = np.hstack([x[rows], np.ones((rows.size, 1))])
        target = wrong[rows, cols].astype(np.float64)
        beta = _irls(design, target, l2, iterations)
        return cls(tuple(float(b) for b in beta[:-1]), float(beta[-1]), int(x.shape[0]))


def _irls(design: np.ndarray, target: np.ndarray, l2: float, iterations: int) -> np.ndarray:
    """Ridge-regularised logistic regression; the ridge keeps it finite when the crowd never errs."""
    beta = np.zeros(design.shape[1])
    ridge = l2 * np.eye(design.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        weight = p * (1 - p) + 1e-9
        gradient = design.T @ (target - p) - ridge @ beta
        hessian = (design * weight[:, None]).T @ design + ridge
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta
