"""Tau by the paper's reward: every threshold of the sweep scored by Eq. 14-15, judged by confidence bounds.

"The most accurate tau within L_c" spends the whole labour budget and, through people's time (Eq. 10), the whole
latency demand: the chosen H-DNN sits on the edge of both, so the next split (the test split, the field) lands over
them about half the time (`make demo` measured 1,044 ms against T_d = 1,000 ms after choosing within it on the
search split). Eq. 14-15 reward a margin on every demand and budget (log terms), so its maximum keeps slack where
slack is cheap; the accuracy term uses the accuracy's lower bound and the labour and latency terms their upper bounds
(the same confidence as `margin.py`), and only thresholds whose bounds meet L_c and T_d are eligible.
"""

from __future__ import annotations

import numpy as np

from hgen.compiler.metrics.hdnn import TauChoice, TauSweep, refine_tau
from hgen.compiler.search.margin import wilson_lower_array
from hgen.compiler.search.objective import EPS, Coefficients, Demands


def safe_log_array(x: np.ndarray) -> np.ndarray:
    """`objective.safe_log` over an array: log above EPS, its tangent line below (violations rank by size)."""
    return np.where(x >= EPS, np.log(np.maximum(x, EPS)), np.log(EPS) + (x - EPS) / EPS)


def reward_by_threshold(sweep: TauSweep, demands: Demands, coef: Coefficients, *, storage_mb: float,
                        energy_mj: float, t_infer_ms: float, confidence: float) -> np.ndarray:
    """Eq. 14 + 15 at every threshold of the sweep, each term on the bound that makes it harder to meet."""
    accuracy = wilson_lower_array(sweep.accuracy, sweep.samples, confidence)
    latency = sweep.latency_upper(t_infer_ms, confidence)
    labour = sweep.labour_upper(confidence)
    r1 = (coef.d1 * safe_log_array(accuracy - demands.accuracy)
          + coef.d2 * safe_log_array((demands.latency_ms - latency) / demands.latency_ms))
    fixed = (coef.d3 * safe_log_array(np.array((demands.storage_mb - storage_mb) / demands.storage_mb))
             + coef.d4 * safe_log_array(np.array((demands.energy_mj - energy_mj) / demands.energy_mj)))
    return r1 + fixed + coef.d5 * safe_log_array((demands.labour - labour) / demands.labour)


def best_tau(sweep: TauSweep, proposal: float, demands: Demands, coef: Coefficients, *, storage_mb: float,
             energy_mj: float, t_infer_ms: float, confidence: float) -> TauChoice:
    """The threshold with the highest reward among those whose labour and latency bounds meet L_c and T_d (ties:
    nearest the proposal). None eligible: `refine_tau`'s fallback, flagged `meets_labour=False`."""
    fast = sweep.latency_upper(t_infer_ms, confidence) <= demands.latency_ms
    if not fast.any():  # inference alone is over T_d: no threshold can mend that, so labour alone decides
        fast[:] = True
    eligible = (sweep.labour_upper(confidence) <= demands.labour) & fast
    if not eligible.any():
        return refine_tau(sweep, proposal, demands.labour, confidence)
    score = reward_by_threshold(sweep, demands, coef, storage_mb=storage_mb, energy_mj=energy_mj,
                                t_infer_ms=t_infer_ms, confidence=confidence)
    pool = np.flatnonzero(eligible)
    best = pool[np.lexsort((np.abs(sweep.taus[pool] - proposal), -score[pool]))[0]]
    return TauChoice(float(sweep.taus[best]), float(proposal), float(sweep.accuracy[best]), float(sweep.labour[best]),
                     True)
