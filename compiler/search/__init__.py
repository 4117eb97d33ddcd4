"""H-Gen search (paper section 5.3): strategies propose (plan, tau), a shared evaluator measures, Eq. 14-15 score."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hgen.compiler.search.budget import PaperBudget
from hgen.compiler.search.context import Budget, Candidate, SearchContext, StopSearch
from hgen.compiler.search.devices import DeviceProfile
from hgen.compiler.search.evaluator import CandidateEvaluator
from hgen.compiler.search.objective import Demands, coefficients
from hgen.compiler.search.strategies import get_strategy


@dataclass(frozen=True)
class SearchResult:
    strategy: str
    seed: int
    candidates: tuple[Candidate, ...]
    best: Candidate | None
    best_feasible: Candidate | None
    stop_reason: str
    wall_seconds: float
    evaluations: int
    skipped_on_paper: int = 0
    accuracy_bound: str = ""


def run_search(evaluator: CandidateEvaluator, demands: Demands, device: DeviceProfile, *, strategy: str = "hgen",
               budget: Budget = Budget(), seed: int = 0, accuracy_confidence: float = 0.9,
               on_candidate: Callable[[Candidate], None] = lambda c: None,
               paper: PaperBudget | None = None) -> SearchResult:
    """Run one strategy until it finds a feasible candidate or its budget runs out; never loops forever.

    A candidate meets A when the `accuracy_confidence` lower bound of its accuracy on the search split does (0: the
    point estimate); a split too small for even a perfect candidate to pass is refused before any training.
    `paper`: the S/E costs the caller already measured (and checked) for this model, space and demands.
    """
    run = get_strategy(strategy)
    ctx = SearchContext(evaluator, demands, coefficients(demands, device.battery_mah), budget, on_candidate,
                        accuracy_confidence=accuracy_confidence, paper=paper)
    ctx.accuracy_bound.check_split(demands.accuracy)
    start = time.perf_counter()
    try:
        run(ctx, seed)
        ctx.stop_reason = ctx.stop_reason or "strategy finished"
    except StopSearch:
        pass
    return SearchResult(strategy, seed, tuple(ctx.candidates), ctx.best(), ctx.best_feasible(), ctx.stop_reason,
                        time.perf_counter() - start, evaluator.evaluations, ctx.skipped_on_paper,
                        ctx.accuracy_bound.describe())
