"""Does the screening proxy rank plans like their fine-tuned accuracy does? (issue 19, checked before it was used)

Per seed: the benchmark's LeNet-5 base model and evaluator, then `--plans` distinct plans drawn layer by layer
uniformly among the operators H-Gen's action mask allows (valid, within S_c and E_c on paper: the plans screening
actually chooses between). Each plan gets the untrained fidelity scores of `compiler/search/screen.py` (on training
images) and is then fine-tuned and measured as in a search: the backbone's accuracy on the search split, and the
fused accuracy and reward at the refined tau. Spearman rank correlation of each proxy with each outcome.
Annotators are SIMULATED.

Run: .venv/bin/python tools/bench/search_quality_proxy.py [--dataset D5] [--seeds 1] [--plans 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
from benchlib import machine, markdown_table, write_results
from search_quality import ACCURACY, BUDGETS, DEVICE

from hgen.compiler.data import load_dataset
from hgen.compiler.models import build_model
from hgen.compiler.search.context import Budget, SearchContext
from hgen.compiler.search.devices import get_device
from hgen.compiler.search.evaluator import CandidateEvaluator, EvaluatorConfig
from hgen.compiler.search.objective import Demands, coefficients
from hgen.compiler.search.screen import Screener
from hgen.compiler.search.space import plan_key
from hgen.compiler.train import TrainConfig, train_classifier

PROXIES = ("agreement", "neg_kl")
OUTCOMES = ("backbone_accuracy", "fused_accuracy", "reward")


def draw_plans(ctx: SearchContext, count: int, rng: np.random.Generator) -> list[dict[str, str]]:
    space, plans, seen = ctx.evaluator.space, [], set()
    for _ in range(count * 50):
        plan: dict[str, str] = {}
        for position, layer in enumerate(space.layers):
            plan[layer.name] = space.actions[int(rng.choice(np.flatnonzero(ctx.action_mask(plan, position))))]
        if plan_key(plan) not in seen and not ctx.paper_budget().violations(plan):
            seen.add(plan_key(plan))
            plans.append(plan)
        if len(plans) == count:
            break
    return plans


def one_seed(name: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    data = load_dataset(name, seed=seed)
    base = build_model("lenet5", data.input_shape, data.num_classes)
    train_classifier(base, data.train, config=TrainConfig(epochs=args.base_epochs, seed=seed))
    from hgen.compiler.search.space import build_space

    device = get_device(DEVICE)
    demands = Demands(accuracy=ACCURACY[name], **BUDGETS)
    evaluator = CandidateEvaluator(base, data, build_space(base), device, EvaluatorConfig(seed=seed))
    ctx = SearchContext(evaluator, demands, coefficients(demands, device.battery_mah),
                        Budget(episodes=10**6, seconds=10**6, stop_at_feasible=False), accuracy_confidence=0.9)
    screener = Screener(evaluator)
    rows = []
    for plan in draw_plans(ctx, args.plans, np.random.default_rng(seed)):
        start = time.perf_counter()
        fid = screener.fidelity(plan)
        screen_s = time.perf_counter() - start
        candidate = ctx.score(plan, 0.5, refine=True)
        backbone = evaluator.backbone(plan)
        accuracy = float(np.mean(backbone.logits.argmax(axis=1) == evaluator.search.split.y))
        rows.append({"seed": seed, "plan": plan, "agreement": fid.agreement, "neg_kl": fid.neg_kl,
                     "screen_seconds": screen_s, "finetune_seconds": backbone.finetune_seconds,
                     "backbone_accuracy": accuracy, "fused_accuracy": candidate.measured.accuracy,
                     "reward": candidate.reward})
        print(f"seed {seed}: agreement {fid.agreement:.3f} -KL {fid.neg_kl:.3f} -> backbone A {accuracy:.4f} "
              f"({screen_s:.2f} s screen)", file=sys.stderr, flush=True)
    return rows


def spearman_rows(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from scipy.stats import spearmanr

    out = []
    for seed in sorted({p["seed"] for p in plans}):
        mine = [p for p in plans if p["seed"] == seed]
        for proxy in PROXIES:
            row: dict[str, Any] = {"seed": seed, "proxy": proxy, "plans": len(mine)}
            for outcome in OUTCOMES:
                rho = spearmanr([p[proxy] for p in mine], [p[outcome] for p in mine]).statistic
                row[f"spearman_{outcome}"] = round(float(rho), 3)
            out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="D5")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--plans", type=int, default=30)
    parser.add_argument("--base-epochs", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    plans = [row for seed in range(args.seeds) for row in one_seed(args.dataset, seed, args)]
    rows = spearman_rows(plans)
    median = {k: float(np.median([p[k] for p in plans])) for k in ("screen_seconds", "finetune_seconds")}
    result = {"config": vars(args), "rows": rows, "plans": plans, "median_seconds": median,
              "machine": machine(), "wall_seconds": time.perf_counter() - start}
    m = result["machine"]
    text = "\n".join([
        "# Screening proxy vs fine-tuned accuracy (issue 19; annotators SIMULATED)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU, shared with other work (nice 10). {args.dataset}, LeNet-5 "
        f"({args.base_epochs} epochs) on `{DEVICE}`, seeds 0..{args.seeds - 1}, {args.plans} distinct plans per seed "
        "drawn uniformly among the operators H-Gen's budget-aware mask allows. Proxies are computed on 500 training "
        "images without any fine-tune; outcomes after the search's fine-tune, on the search split (fused accuracy "
        "and reward at the refined tau).",
        "",
        markdown_table(rows, ["seed", "proxy", "plans", *[f"spearman_{o}" for o in OUTCOMES]]),
        "",
        f"Median seconds per plan: screening {median['screen_seconds']:.2f}, fine-tune alone "
        f"{median['finetune_seconds']:.2f}. Whole run {result['wall_seconds']:.0f} s.",
    ])
    write_results("search_quality_proxy", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
