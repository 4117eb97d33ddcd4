"""H-Gen's screening: plans are ranked by how close their untrained rewrite stays to the base model, and of each
episode's proposals only the best-ranked one that would cost a fine-tune is fine-tuned (real LeNet-5 rewrites)."""

from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pytest
from test_search_budget_mask import E_C, S_C, SpyEvaluator

from hgen.compiler.data import Split
from hgen.compiler.models import build_model
from hgen.compiler.search import run_search
from hgen.compiler.search.budget import PaperBudget
from hgen.compiler.search.context import Budget, SearchContext
from hgen.compiler.search.devices import get_device
from hgen.compiler.search.objective import Demands, coefficients
from hgen.compiler.search.screen import Screener, ScreenConfig, fidelity
from hgen.compiler.search.space import build_space, plan_key
from hgen.compiler.search.strategies.hgen import screened
from hgen.compiler.train import predict_logits


@pytest.fixture(scope="module")
def lenet():
    model = build_model("lenet5", (28, 28, 1), 10, {})
    return model, build_space(model)


def within_budget_plans(model, space, paper, count: int, seed: int) -> list[dict[str, str]]:
    rng, plans = np.random.default_rng(seed), {}
    while len(plans) < count:
        plan: dict[str, str] = {}
        for position, layer in enumerate(space.layers):
            keep = paper.mask(space.valid_mask(model, plan, position), plan, position)
            plan[layer.name] = space.actions[int(rng.choice(np.flatnonzero(keep)))]
        plans[plan_key(plan)] = plan
    return list(plans.values())


def test_fidelity_is_perfect_for_the_teacher_and_falls_with_distortion():
    teacher = np.random.default_rng(0).normal(size=(200, 10))
    same = fidelity(teacher, teacher)
    assert same.agreement == 1.0 and same.neg_kl == pytest.approx(0.0, abs=1e-12)
    noise = np.random.default_rng(1).normal(size=teacher.shape)
    slight, heavy = fidelity(teacher + 0.3 * noise, teacher), fidelity(teacher + 3.0 * noise, teacher)
    assert same.score > slight.score > heavy.score and slight.agreement > heavy.agreement
    broken = fidelity(np.full_like(teacher, np.nan), teacher)
    assert broken.score == -np.inf and broken.agreement == 0.0


def test_screener_scores_real_rewrites_on_training_images_and_keeps_the_identity_best(lenet):
    model, space = lenet
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    evaluator = SimpleNamespace(base=model, space=space, finetune=Split(x, np.zeros(64, int)),
                                teacher_logits=predict_logits(model, x))
    screener = Screener(evaluator, ScreenConfig(samples=32))
    assert len(screener.x) == 32
    identity = screener.fidelity(space.identity_plan())
    assert identity.agreement == 1.0 and identity.neg_kl == pytest.approx(0.0, abs=1e-6)
    paper = PaperBudget.build(model, space, S_C, E_C)
    plans = within_budget_plans(model, space, paper, 3, seed=0)
    scores = [screener.fidelity(plan).score for plan in plans]
    assert all(s < identity.score for s in scores) and len(set(scores)) > 1  # compression costs fidelity, unequally
    assert screener.best(plans) is plans[int(np.argmax(scores))]


def test_only_the_best_screened_paid_proposal_is_kept_with_every_free_one(lenet):
    model, space = lenet
    spy = SpyEvaluator(model, space)
    demands = Demands(accuracy=0.9, storage_mb=S_C, energy_mj=E_C)
    paper = PaperBudget.build(model, space, S_C, E_C)
    ctx = SearchContext(spy, demands, coefficients(demands, 3800), Budget(), paper=paper)
    cached, *paid = within_budget_plans(model, space, paper, 4, seed=1)
    spy.backbone(cached)
    over_budget = space.identity_plan()  # the base model breaks both budgets on paper
    screener = Screener(spy)
    proposals = [(plan, [("steps", i)]) for i, plan in enumerate([over_budget, *paid, cached, paid[0]])]
    kept = screened(ctx, screener, proposals)
    best = max(paid, key=lambda plan: screener.fidelity(plan).score)
    assert [plan_key(plan) for plan, _ in kept] == [plan_key(over_budget), plan_key(cached), plan_key(best)]
    assert screened(ctx, screener, proposals[:1]) == proposals[:1]  # nothing to fine-tune: the free ones only


def test_hgen_fine_tunes_at_most_one_new_backbone_per_episode_after_the_warm_start(lenet):
    model, space = lenet
    spy = SpyEvaluator(model, space)
    demands = Demands(accuracy=0.9, storage_mb=S_C, energy_mj=E_C)
    result = run_search(spy, demands, get_device("rpi4"), strategy="hgen", budget=Budget(episodes=3), seed=2)
    evaluated_by = {}  # episode -> backbones fine-tuned so far when its last candidate was scored
    for candidate in result.candidates:
        evaluated_by[candidate.episode] = candidate.evaluations
    counts = [evaluated_by[e] for e in sorted(evaluated_by)]
    # episode 1: the best warm-start plan (warm_start.py) and the best DQN proposal; then at most one per episode
    assert counts[0] <= 2 and all(0 <= b - a <= 1 for a, b in pairwise(counts))
    assert len(spy.finetuned) == counts[-1] >= 2
