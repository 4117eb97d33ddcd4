"""Tau by the paper's reward: every threshold of the sweep scored by Eq. 14-15, judged by confidence bounds.

"The most accurate tau within L_c" spends the whole labour budget and, through people's time (Eq. 10), the whole
latency demand: the chosen H-DNN sits on the edge of both, so the next split (the test split, the field) lands over
them about half the time (`make demo` measured 1,044 ms against T_d = 1,000 ms after choosing within it on the
search split). Eq. 14-15 reward a margin on every demand and budget (log terms), so its maximum keeps slack where
slack is cheap; the accuracy term uses the accuracy's lower bound and the labour and latency terms their upper bounds
(the same confidence as `margin.py`), and only thresholds whose bounds meet L_c and T_d are eligible.
"""

from __future__ import annotations

import math

import numpy as np

from hgen.compiler.metrics.hdnn import TauChoice, TauSweep, refine_tau
from hgen.compiler.search.margin import wilson_lower_array
from hgen.compiler.search.objective import Coefficients, Demands, Measured, reward


def reward_by_threshold(sweep: TauSweep, demands: Demands, coef: Coefficients, *, storage_mb: float,
                        energy_mj: float, t_infer_ms: float, confidence: float) -> np.ndarray:
    """Eq. 14 + 15 at every threshold of the sweep, each term on the bound that makes it harder to meet."""
    n = len(sweep.taus)
    bounds = Measured(wilson_lower_array(sweep.accuracy, sweep.samples, confidence),
                      sweep.latency_upper(t_infer_ms, confidence), np.full(n, storage_mb), np.full(n, energy_mj),
                      sweep.labour_upper(confidence))
    r1, r2 = reward(bounds, demands, coef)
    return r1 + r2


def best_tau(sweep: TauSweep, proposal: float, demands: Demands, coef: Coefficients, *, storage_mb: float,
             energy_mj: float, t_infer_ms: float, confidence: float) -> TauChoice:
    """The threshold with the highest reward among those whose labour and latency bounds meet L_c and T_d (ties:
    nearest the proposal). None eligible: `refine_tau`'s fallback, flagged `meets_labour=False`."""
    eligible = sweep.within(demands.labour, demands.latency_ms, t_infer_ms, confidence)
    if not eligible.any():
        return refine_tau(sweep, proposal, demands.labour, confidence)
    score = reward_by_threshold(sweep, demands, coef, storage_mb=storage_mb, energy_mj=energy_mj,
                                t_infer_ms=t_infer_ms, confidence=confidence)
    pool = np.flatnonzero(eligible)
    best = pool[np.lexsort((np.abs(sweep.taus[pool] - proposal), -score[pool]))[0]]
    return TauChoice(float(sweep.taus[best]), float(proposal), float(sweep.accuracy[best]), float(sweep.labour[best]),
                     True)


def why_nobody_is_asked(sweep: TauSweep, demands: Demands, t_infer_ms: float, confidence: float) -> str:
    """Why no threshold that asks people was chosen, in the user's terms: a compile that sends nobody to people
    (L 0) on a small validation split used to give no reason, and the user could not tell a weak model from a
    split too small to bound the labour of asking."""
    asking = np.flatnonzero(sweep.labour > 0)
    if not asking.size:
        return "no validation image falls below any threshold, so there is nothing to ask people about"
    first = asking[0]
    reasons = []
    upper = float(sweep.labour_upper(confidence)[first])
    if upper > demands.labour:
        needed = math.ceil(sweep.samples * upper / demands.labour)
        reasons.append(f"asking about even the least confident of the {sweep.samples} validation images puts the "
                       f"labour's upper bound ({confidence:.0%} confidence) at {upper:.3f}, over L_c {demands.labour} "
                       f"(the bound narrows with more images: about {needed} would allow it; or raise --labour)")
    latency = float(sweep.latency_upper(t_infer_ms, confidence)[first])
    if latency > demands.latency_ms:
        reasons.append(f"people's time makes the mean latency of asking about even one of them {latency:.1f} ms, "
                       f"over T_d {demands.latency_ms} ms (raise --latency-ms)")
    if reasons:
        return "; ".join(reasons)
    return ("thresholds that ask people met L_c and T_d, but none scored a higher Eq. 14-15 reward on the validation "
            "split: the accuracy people add there did not pay for their labour")
