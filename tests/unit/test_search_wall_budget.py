"""The search's wall-time budget: a fine-tune cannot be cut short, so one expected to end past the budget is not
started (a 120 s budget used to end after 167 s: the last fine-tune began at 110 s)."""

from __future__ import annotations

import time

import pytest

from hgen.compiler.search.context import Budget, SearchContext, StopSearch
from hgen.compiler.search.objective import Demands


class Evaluator:
    """Only what `SearchContext.backbone` asks of the evaluator."""

    evaluations = 0

    def cached(self, plan: dict[str, str]) -> bool:
        return False

    def backbone(self, plan: dict[str, str]) -> str:
        return "fine-tuned"


def context(elapsed_s: float, fine_tunes: list[float]) -> SearchContext:
    return SearchContext(Evaluator(), Demands(), None, Budget(seconds=120.0),  # type: ignore[arg-type]
                         started=time.perf_counter() - elapsed_s, fine_tune_seconds=list(fine_tunes))


def test_a_fine_tune_expected_to_end_past_the_budget_is_not_started() -> None:
    ctx = context(90.0, [50.0, 40.0, 60.0])
    with pytest.raises(StopSearch, match=r"the next fine-tune \(about 50 s, as the ones before\) would end past it"):
        ctx.backbone({"conv1": "fire"})
    assert ctx.stop_reason.startswith("wall-time budget of 120 s")


def test_one_that_fits_runs_and_is_timed() -> None:
    ctx = context(90.0, [20.0])
    assert ctx.backbone({"conv1": "fire"}) == "fine-tuned" and len(ctx.fine_tune_seconds) == 2
    assert context(0.0, []).backbone({"conv1": "fire"}) == "fine-tuned"  # nothing measured yet: the first runs
