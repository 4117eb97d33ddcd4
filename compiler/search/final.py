"""The winner as a compile delivers it: fine-tuned longer, tau chosen again, measured on held-out data.

Shared by `compile_hdnn` and the search-quality benchmark, so the benchmark's "as compiled" verdict is the compile's
own code path, not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hgen.compiler.errors import CompilerError
from hgen.compiler.search.context import Candidate
from hgen.compiler.search.evaluator import Backbone, CandidateEvaluator, HeldOut
from hgen.compiler.search.objective import Demands, Measured, coefficients


@dataclass(frozen=True)
class Finalised:
    backbone: Backbone
    candidate: Candidate  # tau re-chosen for the longer-trained model
    measured: Measured  # on the held-out split
    logits: np.ndarray  # the backbone's logits on the held-out split


def finalise(evaluator: CandidateEvaluator, chosen: Candidate, epochs: int, demands: Demands,
             accuracy_confidence: float, held_out: HeldOut) -> Finalised:
    """The winner fine-tuned `epochs` on the full training split; its tau chosen again on the search split for the
    model actually deployed (the longer fine-tune moves its confidences), when the search refined tau at all (never
    for a search without people)."""
    from hgen.compiler.train import predict_logits

    final = evaluator.final(chosen.plan, epochs)
    if final.error:
        raise CompilerError(f"the chosen plan no longer applies: {final.error}")
    if chosen.tau_proposed is not None:
        coef = coefficients(demands, evaluator.device.battery_mah)
        tau = evaluator.best_tau(final, chosen.tau, demands, coef, accuracy_confidence).tau
        chosen = replace(chosen, tau=tau)
    logits = predict_logits(final.model, held_out.split.x)
    return Finalised(final, chosen, evaluator.measure(final, chosen.tau, held_out=held_out, logits=logits), logits)
