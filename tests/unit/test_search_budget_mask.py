"""Budget-aware actions on LeNet-5 (28x28x1): the mask removes exactly the operators after which no valid plan meets
S_c and E_c (checked against every valid plan), and a plan over budget on paper is never fine-tuned."""

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.metrics.hdnn import TauChoice
from hgen.compiler.models import build_model
from hgen.compiler.search import run_search
from hgen.compiler.search.budget import PaperBudget
from hgen.compiler.search.context import Budget, SearchContext
from hgen.compiler.search.devices import get_device
from hgen.compiler.search.evaluator import Backbone, EvaluatorConfig
from hgen.compiler.search.objective import Demands, Measured, coefficients
from hgen.compiler.search.space import IDENTITY, build_space, plan_key
from hgen.compiler.train import predict_logits

S_C, E_C = 0.27, 0.13  # the tight LeNet-5 budgets: the base model (0.282 MB, 0.135 mJ) breaks both


@pytest.fixture(scope="module")
def lenet():
    model = build_model("lenet5", (28, 28, 1), 10, {})
    return model, build_space(model)


@pytest.fixture(scope="module")
def paper(lenet):
    model, space = lenet
    return PaperBudget.build(model, space, S_C, E_C)


@pytest.fixture(scope="module")
def every_plan(lenet, paper):
    """Every plan the library accepts, built in layer order with the validity mask, and its S and E on paper."""
    model, space = lenet
    plans = [{}]
    for position, layer in enumerate(space.layers):
        plans = [plan | {layer.name: space.actions[i]} for plan in plans
                 for i in np.flatnonzero(space.valid_mask(model, plan, position))]
    return [(plan, paper.additive_cost(plan)) for plan in plans]


def feasible_choices(every_plan, space, prefix: dict[str, str], position: int) -> set[str]:
    """Brute force: operators at `position` that some valid plan within both budgets takes after `prefix`."""
    name = space.layers[position].name
    return {plan[name] for plan, (s, e) in every_plan
            if s <= S_C and e <= E_C and all(plan[k] == v for k, v in prefix.items())}


def masked(lenet, paper, prefix: dict[str, str], position: int) -> set[str]:
    model, space = lenet
    keep = paper.mask(space.valid_mask(model, prefix, position), prefix, position)
    return {space.actions[i] for i in np.flatnonzero(keep)}


def test_paper_costs_add_up_to_estimate_plan(lenet, paper, every_plan):
    rng = np.random.default_rng(0)
    for index in rng.choice(len(every_plan), 12, replace=False):
        plan, (storage, energy) = every_plan[index]
        assert (storage, energy) == pytest.approx(paper.exact_cost(plan), rel=1e-9)


def test_mask_removes_exactly_the_operators_without_a_feasible_completion(lenet, paper, every_plan):
    model, space = lenet
    prefixes = {(): 0}
    for plan, _ in every_plan[::37]:  # a spread of prefixes of every length
        for position in range(1, len(space.layers)):
            prefixes[tuple((l.name, plan[l.name]) for l in space.layers[:position])] = position
    removed_somewhere = False
    for prefix, position in prefixes.items():
        expected = feasible_choices(every_plan, space, dict(prefix), position)
        got = masked(lenet, paper, dict(prefix), position)
        assert got == expected, (prefix, position)
        valid = {space.actions[i] for i in np.flatnonzero(space.valid_mask(model, dict(prefix), position))}
        removed_somewhere |= bool(valid - got)
    assert removed_somewhere
    first = masked(lenet, paper, {}, 0)
    assert first and first < set(space.layers[0].operators)  # tight: some conv1 operators go, some stay


def test_following_the_mask_always_ends_within_budget(lenet, paper):
    model, space = lenet
    rng = np.random.default_rng(1)
    for _ in range(20):
        plan: dict[str, str] = {}
        for position, layer in enumerate(space.layers):
            keep = paper.mask(space.valid_mask(model, plan, position), plan, position)
            plan[layer.name] = space.actions[int(rng.choice(np.flatnonzero(keep)))]
        assert paper.violations(plan) == []


def test_impossible_budgets_mask_everything_and_the_context_falls_back(lenet):
    model, space = lenet
    paper = PaperBudget.build(model, space, 0.01, 0.001)
    valid = space.valid_mask(model, {}, 0)
    assert not paper.mask(valid, {}, 0).any()
    ctx = SearchContext(SpyEvaluator(model, space), Demands(storage_mb=0.01, energy_mj=0.001),
                        coefficients(Demands(), 3800), Budget(), paper=paper)
    assert (ctx.action_mask({}, 0) == valid).all()


def test_a_search_with_impossible_budgets_stops_on_paper_and_finetunes_nothing(lenet):
    model, space = lenet
    spy = SpyEvaluator(model, space)
    result = run_search(spy, Demands(storage_mb=0.01, energy_mj=0.001), get_device("rpi4"), budget=Budget(episodes=5))
    assert not spy.finetuned and not result.candidates
    assert "no plan meets S <= 0.01 MB and E <= 0.001 mJ on paper" in result.stop_reason


class SpyEvaluator:
    """Stands in for the fine-tuning evaluator and records every plan it is asked to fine-tune."""

    search_size = 2500
    config = EvaluatorConfig()  # 32-bit storage, as a float deployment

    def __init__(self, model, space) -> None:
        self.base, self.space = model, space
        self.finetuned: list[dict[str, str]] = []
        self.finetune = Split(np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32), np.zeros(16, int))
        self.teacher_logits = predict_logits(model, self.finetune.x)  # what H-Gen's screening compares against

    @property
    def evaluations(self) -> int:
        return len(self.finetuned)

    def cached(self, plan: dict[str, str]) -> bool:
        return plan in self.finetuned

    def backbone(self, plan: dict[str, str]) -> Backbone:
        if plan not in self.finetuned:
            self.finetuned.append(dict(plan))
        return Backbone(plan, None, 1.0, np.zeros((1, 10)), 0, 0, 0.1, 0.1, 1.0, 0.0)

    def best_tau(self, backbone: Backbone, proposal: float, demands, coef, confidence: float) -> TauChoice:
        return TauChoice(0.25, proposal, 0.5, 0.0, True)

    def measure(self, backbone: Backbone, tau: float) -> Measured:
        return Measured(0.5, 1.0, 0.1, 0.1, 0.0)  # never meets A, so the search runs its whole budget


@pytest.mark.parametrize("strategy", ["hgen", "random", "adadeep"])
def test_a_plan_over_budget_on_paper_is_never_finetuned(lenet, paper, strategy):
    model, space = lenet
    spy = SpyEvaluator(model, space)
    demands = Demands(accuracy=0.9, storage_mb=S_C, energy_mj=E_C)
    episodes = 4 if strategy == "hgen" else 25  # hgen screens 4 real rewrites per episode (`screen.py`)
    result = run_search(spy, demands, get_device("rpi4"), strategy=strategy, budget=Budget(episodes=episodes), seed=3)
    assert spy.finetuned and all(paper.violations(plan) == [] for plan in spy.finetuned)
    skipped = [c for c in result.candidates if c.skipped_on_paper]
    assert result.skipped_on_paper == len(skipped)
    assert all(c.measured is None and paper.violations(c.plan) and c.to_record()["skipped_on_paper"] for c in skipped)
    if strategy == "random":  # no budget mask: its over-budget plans are caught on paper
        assert skipped
    else:  # the DQN's mask leaves a feasible completion at every step here, so nothing is even proposed
        assert not skipped
    if strategy == "hgen":
        scored = [c for c in result.candidates if c.measured is not None]
        assert all(c.tau == 0.25 and c.tau_proposed is not None for c in scored)
        assert all(c.to_record()["tau_proposed"] == c.tau_proposed for c in scored)


def test_identity_plan_over_budget_is_recorded_as_skipped(lenet, paper):
    model, space = lenet
    spy = SpyEvaluator(model, space)
    demands = Demands(storage_mb=S_C, energy_mj=E_C)
    ctx = SearchContext(spy, demands, coefficients(demands, 3800), Budget(), paper=paper)
    candidate = ctx.score(space.identity_plan(), 0.5, refine=True)
    assert candidate.skipped_on_paper and not spy.finetuned and ctx.skipped_on_paper == 1
    assert any("on paper" in v for v in candidate.violations) and candidate.reward < -1000
    assert space.identity_plan()[space.layers[0].name] == IDENTITY


def test_minimal_plan_keeps_identity_wherever_a_feasible_completion_allows(lenet, paper, every_plan):
    """Brute force: the plan is within both budgets, and wherever it rewrites a layer, no feasible plan with the
    same earlier choices leaves that layer as it is."""
    _, space = lenet
    plan = paper.minimal()
    assert plan is not None and paper.within(*paper.additive_cost(plan))
    rewritten = [position for position, layer in enumerate(space.layers) if plan[layer.name] != IDENTITY]
    assert rewritten  # the base model breaks both budgets
    for position in rewritten:
        prefix = {layer.name: plan[layer.name] for layer in space.layers[:position]}
        assert IDENTITY not in feasible_choices(every_plan, space, prefix, position)


def test_warm_start_plans_rewrite_the_fewest_layers_any_feasible_plan_can(lenet, paper, every_plan):
    from hgen.compiler.search.warm_start import fewest_rewrites

    _, space = lenet
    plans = fewest_rewrites(paper)

    def rewritten(plan):
        return sum(op != IDENTITY for op in plan.values())

    feasible = [plan for plan, (s, e) in every_plan if s <= S_C and e <= E_C]
    assert plans and all(paper.within(*paper.additive_cost(plan)) for plan in plans)
    assert {rewritten(plan) for plan in plans} == {min(rewritten(plan) for plan in feasible)} == {1}
    assert len(plans) == len({plan_key(plan) for plan in plans}) <= 8
    assert plans[-1]["logits"] == "gap"  # the most drastic single rewrite (the whole FC stack) comes last


def test_hgen_fine_tunes_a_warm_start_plan_in_its_first_episode(lenet, paper):
    from hgen.compiler.search.warm_start import fewest_rewrites

    model, space = lenet
    spy = SpyEvaluator(model, space)
    demands = Demands(accuracy=0.9, storage_mb=S_C, energy_mj=E_C)
    run_search(spy, demands, get_device("rpi4"), strategy="hgen", budget=Budget(episodes=1), seed=3)
    # the best screened warm-start plan, then the best screened DQN proposal
    assert len(spy.finetuned) == 2 and spy.finetuned[0] in fewest_rewrites(paper)
