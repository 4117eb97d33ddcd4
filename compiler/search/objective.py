"""The H-Gen objective (paper Eq. 1) and reward (Eq. 14-15).

maximise d1 log(A - A_d) + d2 log(T_d - T)  subject to  S <= S_c, E <= E_c, L <= L_c.
R1 = d1 log(A - A_d) + d2 log(T_d - T)                (demands)
R2 = d3 log(S_c - S) + d4 log(E_c - E) + d5 log(L_c - L)   (budgets)
with d5 = (0.1 - L_c) / 0.1, d4 = max((3800 - E_battery) / 3800, 0.5) * (1 - d5), d3 = 1 - d4 - d5 (appendix).

Every margin except accuracy's is divided by its bound (T_d, S_c, E_c, L_c) so that milliseconds, megabytes and
millijoules weigh alike. log of a non-positive margin (a violated demand or budget) is replaced by a linear
continuation of log below eps = 1e-3: continuous, strictly increasing, so a slightly violated candidate still ranks
above a badly violated one, and every violation costs more than any feasible margin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import Field

from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.config import StrictModel

EPS = 1e-3
REFERENCE_BATTERY_MAH = 3800.0


def safe_log(x: float | np.ndarray) -> float | np.ndarray:
    """log(x) for x >= EPS; below, the tangent line at EPS (slope 1/EPS), so violations rank by size. Also
    element-wise over an array (every threshold of a tau sweep scored at once, `tau.py`)."""
    if isinstance(x, np.ndarray):
        return np.where(x >= EPS, np.log(np.maximum(x, EPS)), math.log(EPS) + (x - EPS) / EPS)
    return math.log(x) if x >= EPS else math.log(EPS) + (x - EPS) / EPS


class Demands(StrictModel):
    """What the user asks of the H-DNN and what the device can afford."""

    accuracy: float = Field(0.85, gt=0.0, lt=1.0, title="A_d: minimum accuracy (fraction)")
    latency_ms: float = Field(30.0, gt=0.0, title="T_d: maximum mean latency per sample, ms")
    storage_mb: float = Field(2.0, gt=0.0, title="S_c: storage budget, MB")
    energy_mj: float = Field(3.0, gt=0.0, title="E_c: energy budget per inference, mJ")
    labour: float = Field(0.03, gt=0.0, le=0.1, title="L_c: human labour budget (Eq. 13 ratio, at most 0.1)")
    d1: float = Field(0.5, ge=0.0, title="Weight of the accuracy margin")
    d2: float = Field(0.5, ge=0.0, title="Weight of the latency margin")


@dataclass(frozen=True)
class Coefficients:
    d1: float
    d2: float
    d3: float
    d4: float
    d5: float


def coefficients(demands: Demands, battery_mah: float) -> Coefficients:
    """The appendix's budget weights: a smaller battery weighs energy more, a tighter labour budget weighs labour more."""
    if battery_mah <= 0:
        raise InvalidArgumentError(f"battery capacity must be > 0 mAh, got {battery_mah}")
    d5 = (0.1 - demands.labour) / 0.1
    d4 = max((REFERENCE_BATTERY_MAH - battery_mah) / REFERENCE_BATTERY_MAH, 0.5) * (1.0 - d5)
    return Coefficients(demands.d1, demands.d2, 1.0 - d4 - d5, d4, d5)


@dataclass(frozen=True)
class Measured:
    """A candidate's A/T/S/E/L (A as a fraction, T ms, S MB, E mJ, L ratio); `reward` also takes arrays of them."""

    accuracy: float
    latency_ms: float
    storage_mb: float
    energy_mj: float
    labour: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def margins(measured: Measured, demands: Demands) -> dict[str, float]:
    """Positive = satisfied; normalised by each bound except accuracy."""
    return {
        "accuracy": measured.accuracy - demands.accuracy,
        "latency": (demands.latency_ms - measured.latency_ms) / demands.latency_ms,
        "storage": (demands.storage_mb - measured.storage_mb) / demands.storage_mb,
        "energy": (demands.energy_mj - measured.energy_mj) / demands.energy_mj,
        "labour": (demands.labour - measured.labour) / demands.labour,
    }


def violations(measured: Measured, demands: Demands) -> list[str]:
    """Readable list of what a candidate violates (empty = feasible); a bound met exactly counts as met, one not
    measured (nan: e.g. mAP of a split without boxes) as violated."""
    text = {
        "accuracy": f"accuracy {measured.accuracy:.4f} < {demands.accuracy}",
        "latency": f"latency {measured.latency_ms:.2f} ms > {demands.latency_ms} ms",
        "storage": f"storage {measured.storage_mb:.3f} MB > {demands.storage_mb} MB",
        "energy": f"energy {measured.energy_mj:.3f} mJ > {demands.energy_mj} mJ",
        "labour": f"labour {measured.labour:.4f} > {demands.labour}",
    }
    return [text[key] for key, margin in margins(measured, demands).items() if not margin >= 0]


def reward(measured: Measured, demands: Demands, coef: Coefficients) -> tuple[float, float]:
    """(R1, R2) of Eq. 14 and 15."""
    m = margins(measured, demands)
    r1 = coef.d1 * safe_log(m["accuracy"]) + coef.d2 * safe_log(m["latency"])
    r2 = coef.d3 * safe_log(m["storage"]) + coef.d4 * safe_log(m["energy"]) + coef.d5 * safe_log(m["labour"])
    return r1, r2
