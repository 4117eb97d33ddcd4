"""Feasibility with a margin: a candidate meets A only when its accuracy's lower confidence bound does.

The search picks the best of many candidates on one finite split, so the winner's point estimate is biased upward
(the winner's curse): a candidate at 0.832 on 2,500 images may be at 0.82 on the next 2,500. The bound used is the
one-sided Wilson score lower bound for a binomial proportion at `confidence` (default 0.9): it stays inside [0, 1],
is accurate near 1 and for small splits (where the normal approximation is not), and needs no sampling. Fused
accuracy is treated as a proportion of n independent images; the people's answers are drawn once per image, so the
bound covers the image sample, not the crowd's randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from hgen.compiler.errors import InvalidArgumentError


def wilson_lower(accuracy: float, n: int, confidence: float) -> float:
    """One-sided Wilson lower bound of a proportion observed as `accuracy` over `n` trials."""
    if n <= 0:
        raise InvalidArgumentError(f"a confidence bound needs at least one sample, got n={n}")
    return accuracy if confidence <= 0.0 else float(wilson_lower_array(np.array(accuracy), n, confidence))


def wilson_lower_array(accuracy: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """`wilson_lower` over an array of accuracies measured on the same `n` samples."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if confidence <= 0.0:
        return accuracy
    z = NormalDist().inv_cdf(confidence)
    z2n = z * z / n
    spread = z * np.sqrt(accuracy * (1.0 - accuracy) / n + z2n / (4.0 * n))
    return np.maximum(0.0, (accuracy + z2n / 2.0 - spread) / (1.0 + z2n))


@dataclass(frozen=True)
class AccuracyBound:
    """How the search judges A: the lower bound at `confidence` over the `n` images of the search split."""

    n: int
    confidence: float = 0.9

    def lower(self, accuracy: float) -> float:
        return wilson_lower(accuracy, self.n, self.confidence)

    def describe(self) -> str:
        if self.confidence <= 0.0:
            return f"point estimate on {self.n} search images (no margin)"
        return f"{self.confidence:.0%} one-sided Wilson lower bound on {self.n} search images"

    def half_width(self, accuracy: float) -> float:
        """How far below a candidate at `accuracy` the bound sits: the margin the split costs."""
        return accuracy - self.lower(accuracy)

    def check_split(self, demand: float) -> None:
        """Refuse a split too small for any candidate to be certified, even one that is never wrong."""
        if self.lower(1.0) < demand:
            raise InvalidArgumentError(
                f"the search split has {self.n} images: too few to certify A >= {demand} at {self.confidence:.0%} "
                f"confidence even for a perfect candidate (bound {self.lower(1.0):.4f}); use more validation data "
                f"(raise or drop --limit) or a lower --accuracy-confidence")
