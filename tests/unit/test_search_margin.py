"""Feasibility with a margin: A is met only when the accuracy's Wilson lower bound on the search split meets it."""

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.search import run_search
from hgen.compiler.search.context import Budget, SearchContext
from hgen.compiler.search.devices import get_device
from hgen.compiler.search.evaluator import Backbone, EvaluatorConfig
from hgen.compiler.search.margin import AccuracyBound, wilson_lower
from hgen.compiler.search.objective import Demands, Measured, coefficients
from hgen.compiler.search.space import build_space
from hgen.compiler.metrics.hdnn import TauChoice
from hgen.compiler.models import build_model
from hgen.compiler.train import predict_logits

pytestmark = pytest.mark.unit


def test_wilson_lower_bound_matches_the_closed_form_and_its_limits():
    # 90 % one-sided, 850 of 1000, z = 1.28155: (0.850821 - 0.014494) / 1.001642 = 0.83496 (worked by hand).
    assert wilson_lower(0.85, 1000, 0.9) == pytest.approx(0.83496, abs=2e-5)
    assert wilson_lower(0.85, 1000, 0.0) == 0.85  # no margin: the point estimate
    assert wilson_lower(0.0, 50, 0.9) == 0.0 and 0.0 < wilson_lower(1.0, 50, 0.9) < 1.0
    assert wilson_lower(0.85, 10_000, 0.9) > wilson_lower(0.85, 1000, 0.9) > wilson_lower(0.85, 100, 0.9)
    assert wilson_lower(0.85, 1000, 0.99) < wilson_lower(0.85, 1000, 0.9)


def test_the_bound_covers_the_true_accuracy_as_often_as_it_promises():
    rng = np.random.default_rng(0)
    draws = rng.binomial(500, 0.85, size=4000) / 500
    covered = np.mean([wilson_lower(a, 500, 0.9) <= 0.85 for a in draws])
    assert 0.88 <= covered <= 0.93


def test_a_split_too_small_to_certify_even_a_perfect_candidate_is_refused():
    AccuracyBound(200, 0.9).check_split(0.95)
    with pytest.raises(InvalidArgumentError, match="20 images: too few to certify A >= 0.95"):
        AccuracyBound(20, 0.9).check_split(0.95)


class FixedEvaluator:
    """Every backbone measures at `accuracy` on a search split of `search_size` images."""

    config = EvaluatorConfig()  # 32-bit storage, as a float deployment

    def __init__(self, model, space, accuracy: float, search_size: int) -> None:
        self.base, self.space, self.accuracy, self.search_size = model, space, accuracy, search_size
        self.built: list[dict[str, str]] = []
        self.finetune = Split(np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32), np.zeros(16, int))
        self.teacher_logits = predict_logits(model, self.finetune.x)  # what H-Gen's screening compares against

    @property
    def evaluations(self) -> int:
        return len(self.built)

    def cached(self, plan):
        return plan in self.built

    def backbone(self, plan):
        if plan not in self.built:
            self.built.append(dict(plan))
        return Backbone(plan, None, 1.0, np.zeros((1, 10)), 0, 0, 0.01, 0.01, 1.0, 0.0)

    def best_tau(self, backbone, proposal, demands, coef, confidence):
        return TauChoice(0.2, proposal, self.accuracy, 0.0, True)

    def measure(self, backbone, tau):
        return Measured(self.accuracy, 1.0, 0.01, 0.01, 0.0)


@pytest.fixture(scope="module")
def lenet():
    model = build_model("lenet5", (28, 28, 1), 10, {})
    return model, build_space(model)


def test_a_point_estimate_just_above_the_demand_is_not_feasible_with_the_margin(lenet):
    model, space = lenet
    demands = Demands(accuracy=0.85, storage_mb=10.0, energy_mj=10.0)
    evaluator = FixedEvaluator(model, space, 0.855, 1000)  # lower bound 0.840
    ctx = SearchContext(evaluator, demands, coefficients(demands, 3800), Budget(), accuracy_confidence=0.9)
    candidate = ctx.score(space.identity_plan(), 0.3, refine=True)
    assert not candidate.feasible and candidate.accuracy_lower == pytest.approx(wilson_lower(0.855, 1000, 0.9))
    assert "accuracy lower bound 0.84" in candidate.violations[0] and "Wilson" in candidate.violations[0]
    assert candidate.to_record()["accuracy_lower"] == candidate.accuracy_lower
    loose = SearchContext(evaluator, demands, coefficients(demands, 3800), Budget(stop_at_feasible=False),
                          accuracy_confidence=0.0)
    assert loose.score(space.identity_plan(), 0.3, refine=True).feasible


def test_with_a_clear_margin_the_search_stops_at_the_first_candidate(lenet):
    model, space = lenet
    evaluator = FixedEvaluator(model, space, 0.90, 2500)
    result = run_search(evaluator, Demands(accuracy=0.85, storage_mb=10.0, energy_mj=10.0), get_device("rpi4"),
                        budget=Budget(episodes=10))
    assert result.best_feasible is not None and len(result.candidates) == 1


def test_run_search_refuses_a_split_too_small_before_building_anything(lenet):
    model, space = lenet
    evaluator = FixedEvaluator(model, space, 1.0, 10)
    with pytest.raises(InvalidArgumentError, match="too few to certify"):
        run_search(evaluator, Demands(accuracy=0.9), get_device("rpi4"), budget=Budget(episodes=3))
    assert not evaluator.built
