"""Search quality (issue 19): does the H-Gen search meet the demands on data it never saw, and beat random, Optuna and
an AdaDeep-style search to it at an equal budget of distinct backbones?

Per data set and seed: one LeNet-5 trained `--base-epochs` epochs on the training split (shared by the strategies);
each strategy gets a fresh evaluator (no shared cache), the same seed, the same budget of `--evaluations` distinct
backbones and no early stop, and picks its best candidate feasible on the search split (A judged by the 90% Wilson
lower bound; none: its best reward). That candidate's backbone is then measured on the TEST split (never seen by the
search) at its tau, with the simulated crowd answering the test images once: the verdict is whether it meets every
demand there. No further fine-tune is done (a compile's longer final fine-tune only adds accuracy), so the verdict is
the search's own. Every strategy except adadeep scores the same exact tau refinement; adadeep asks nobody (tau 0).
Rank test: one-sided Wilcoxon signed-rank on per-seed best rewards, hgen against each baseline (paired by seed).
Annotators are SIMULATED. Latencies for `rpi4` are estimates (host LiteRT x scale).

Run: .venv/bin/python tools/bench/search_quality.py [--datasets D2,D4,D5] [--seeds 10] [--evaluations 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
import time
from typing import Any

from benchlib import markdown_table, write_results

from hgen.compiler.data import load_dataset
from hgen.compiler.models import build_model
from hgen.compiler.search import run_search
from hgen.compiler.search.context import Budget, SearchContext
from hgen.compiler.search.devices import get_device
from hgen.compiler.search.evaluator import CandidateEvaluator, EvaluatorConfig
from hgen.compiler.search.final import finalise
from hgen.compiler.search.objective import Demands, violations
from hgen.compiler.search.space import build_space
from hgen.compiler.search.strategies import STRATEGIES as SEARCH_STRATEGIES
from hgen.compiler.search.strategies.hgen import run_rl
from hgen.compiler.train import TrainConfig, predict_logits, train_classifier

STRATEGIES = ("hgen", "hgen_unscreened", "random", "optuna", "adadeep")
REFERENCE = "uncompressed"  # per seed: the base model itself (`reference`), not a strategy
DEVICE = "rpi4"
# The LeNet-5 budgets on rpi4; the accuracy demand per data set sits above what the backbone reaches alone
# and below what it reaches with people at L_c (`reference`; measured on seeds 0-1 of the uncompressed base, test
# split: D5 ~0.84 alone, so at 0.83 even the search without people met it; D4 0.80 alone, 0.84-0.855 with people,
# so the earlier 0.85 was at the uncompressed model's own ceiling: 0.83, the D4 demand; D2, from the 10,000
# MNIST test images here, 0.89 alone and 0.92 with people, so the earlier 0.97 was out of anyone's reach: 0.91).
BUDGETS = {"latency_ms": 1000.0, "storage_mb": 0.27, "energy_mj": 0.13, "labour": 0.03}
ACCURACY = {"D2": 0.91, "D4": 0.83, "D5": 0.87}
ACCURACY_CONFIDENCE = 0.9  # the compile's default (`CompileConfig.accuracy_confidence`), used when re-choosing tau


@SEARCH_STRATEGIES.register("hgen_unscreened")
def hgen_unscreened(ctx: SearchContext, seed: int) -> None:
    """Ablation (benchmark only): hgen as before screening, one DQN proposal per episode, each fine-tuned."""
    run_rl(ctx, seed, human=True, screen=None)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def one_search(strategy: str, data: Any, base: Any, space: Any, demands: Demands, seed: int,
               args: argparse.Namespace) -> dict[str, Any]:
    device = get_device(DEVICE)
    evaluator = CandidateEvaluator(base, data, space, device, EvaluatorConfig(seed=seed))
    result = run_search(evaluator, demands, device, strategy=strategy, seed=seed,
                        budget=Budget(episodes=10**6, evaluations=args.evaluations,
                                      seconds=args.budget_minutes * 60, stop_at_feasible=False))
    chosen = result.best_feasible or result.best
    test = evaluator.held_out(data.test)
    backbone = evaluator.backbone(chosen.plan)
    measured = evaluator.measure(backbone, chosen.tau, held_out=test, logits=predict_logits(backbone.model, test.split.x))
    missed = violations(measured, demands)
    compiled = as_compiled(evaluator, chosen, demands, test, args.final_epochs)
    return {"strategy": strategy, "seed": seed, "plan": chosen.plan, **compiled,
            "evaluations": result.evaluations, "candidates": len(result.candidates),
            "feasible_on_search": result.best_feasible is not None, "best_reward": chosen.reward,
            "search_accuracy": chosen.measured.accuracy if chosen.measured else None,
            "search_accuracy_lower": chosen.accuracy_lower, "tau": chosen.tau,
            "test_accuracy": measured.accuracy, "test_labour": measured.labour, "storage_mb": measured.storage_mb,
            "energy_mj": measured.energy_mj, "latency_ms": measured.latency_ms, "meets_on_test": not missed,
            "test_violations": missed, "wall_seconds": result.wall_seconds, "stop_reason": result.stop_reason,
            "annotators": "simulated"}


def as_compiled(evaluator: CandidateEvaluator, chosen: Any, demands: Demands, test: Any, epochs: int
                ) -> dict[str, Any]:
    """What `hgen-compile` would deliver from this search: the winner fine-tuned `epochs` more on the full training
    split, tau chosen again (the compile's own `finalise`), on the test split; nothing when `epochs` is 0."""
    if epochs <= 0:
        return {}
    done = finalise(evaluator, chosen, epochs, demands, ACCURACY_CONFIDENCE, test)
    return {"compiled_tau": done.candidate.tau, "compiled_test_accuracy": done.measured.accuracy,
            "compiled_test_labour": done.measured.labour,
            "compiled_meets_on_test": not violations(done.measured, demands)}


def reference(data: Any, base: Any, space: Any, seed: int) -> dict[str, Any]:
    """The uncompressed base on the test split, alone and with people at the most accurate tau whose labour meets
    L_c on the search split: what the demands are set against (S 0.282 MB, so it never meets the S budget)."""
    evaluator = CandidateEvaluator(base, data, space, get_device(DEVICE), EvaluatorConfig(seed=seed))
    backbone = evaluator.backbone(space.identity_plan())
    tau = evaluator.refine_tau(backbone, 0.5, BUDGETS["labour"]).tau
    test = evaluator.held_out(data.test)
    measured = evaluator.measure(backbone, tau, held_out=test, logits=predict_logits(backbone.model, test.split.x))
    alone = float((predict_logits(base, data.test.x).argmax(axis=1) == data.test.y).mean())
    return {"strategy": REFERENCE, "seed": seed, "alone_test_accuracy": alone, "tau": tau,
            "test_accuracy": measured.accuracy, "test_labour": measured.labour, "storage_mb": measured.storage_mb,
            "annotators": "simulated"}


def run_dataset(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    demands = Demands(accuracy=ACCURACY[name], **BUDGETS)
    rows = []
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        data = load_dataset(name, seed=seed, limit=args.limit)
        base = build_model("lenet5", data.input_shape, data.num_classes)
        train_classifier(base, data.train, config=TrainConfig(epochs=args.base_epochs, seed=seed))
        space = build_space(base)
        rows.append({"dataset": name, **reference(data, base, space, seed)})
        for strategy in args.strategies:
            row = {"dataset": name, **one_search(strategy, data, base, space, demands, seed, args)}
            rows.append(row)
            log(f"{name} seed {seed} {strategy}: reward {row['best_reward']:.3f}, test A {row['test_accuracy']:.4f} "
                f"L {row['test_labour']:.4f}, meets on test: {row['meets_on_test']} ({row['wall_seconds']:.0f} s)")
    return rows


def wilcoxon_p(rows: list[dict[str, Any]], dataset: str, baseline: str) -> float | None:
    """One-sided p that hgen's per-seed best reward exceeds the baseline's (paired by seed); None when undefined."""
    from scipy.stats import wilcoxon

    by = {(r["strategy"], r["seed"]): r["best_reward"] for r in rows if r["dataset"] == dataset}
    seeds = sorted(s for (strategy, s) in by if strategy == "hgen" and (baseline, s) in by)
    diffs = [by[("hgen", s)] - by[(baseline, s)] for s in seeds]
    if len(diffs) < 2 or all(d == 0 for d in diffs):
        return None
    return float(wilcoxon(diffs, alternative="greater").pvalue)


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [r for r in rows if r["strategy"] != REFERENCE]
    out = []
    for dataset in sorted({r["dataset"] for r in rows}):
        for strategy in STRATEGIES:
            mine = [r for r in rows if r["dataset"] == dataset and r["strategy"] == strategy]
            if not mine:
                continue
            within = [r["test_accuracy"] for r in mine if r["test_labour"] <= BUDGETS["labour"]]
            out.append({"dataset": dataset, "strategy": strategy, "seeds": len(mine),
                        "feasible_on_search": sum(r["feasible_on_search"] for r in mine),
                        "feasible_on_test": sum(r["meets_on_test"] for r in mine),
                        "feasible_as_compiled": (sum(r["compiled_meets_on_test"] for r in mine)
                                                 if all("compiled_meets_on_test" in r for r in mine) else None),
                        "median_reward": statistics.median(r["best_reward"] for r in mine),
                        "median_test_accuracy": statistics.median(within) if within else None,
                        "median_wall_s": statistics.median(r["wall_seconds"] for r in mine),
                        "wilcoxon_p_hgen_greater": (None if strategy == "hgen"
                                                    else wilcoxon_p(rows, dataset, strategy))})
    return out


def references(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for dataset in sorted({r["dataset"] for r in rows if r["strategy"] == REFERENCE}):
        mine = [r for r in rows if r["dataset"] == dataset and r["strategy"] == REFERENCE]
        out.append({"dataset": dataset, "seeds": len(mine), "demand": ACCURACY[dataset],
                    "median_alone_test_accuracy": statistics.median(r["alone_test_accuracy"] for r in mine),
                    "median_with_people_test_accuracy": statistics.median(r["test_accuracy"] for r in mine),
                    "median_test_labour": statistics.median(r["test_labour"] for r in mine)})
    return out


def verdicts(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    for dataset in sorted({r["dataset"] for r in summary}):
        by = {r["strategy"]: r for r in summary if r["dataset"] == dataset}
        hgen = by.get("hgen")
        if hgen is None:
            continue
        need = 0.8 * hgen["seeds"]
        ahead = all(hgen["feasible_on_test"] >= by[b]["feasible_on_test"] and hgen["median_reward"] > by[b]["median_reward"]
                    for b in ("random", "optuna") if b in by)
        reached = "reached" if hgen["feasible_on_test"] >= need else "NOT reached"
        lines.append(f"{dataset}: hgen meets every demand on the test split in {hgen['feasible_on_test']} of "
                     f"{hgen['seeds']} seeds (target: at least 80 % of seeds, {need:.1f}: {reached}); ahead of "
                     f"random and Optuna on that share and on median reward: {'yes' if ahead else 'NO'}.")
        if hgen.get("feasible_as_compiled") is not None:
            compiled = {s: r["feasible_as_compiled"] for s, r in by.items()}
            lines.append(f"{dataset} as compiled (the winner fine-tuned longer, tau chosen again, as `hgen-compile` "
                         f"delivers it): meets every demand on the test split in "
                         + ", ".join(f"{s} {n} of {by[s]['seeds']}" for s, n in compiled.items()) + ".")
    return lines


def markdown(result: dict[str, Any]) -> str:
    c, m = result["config"], result["machine"]
    return "\n".join([
        "# Search quality: demands met on the test split, hgen vs random vs Optuna vs AdaDeep (annotators SIMULATED)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU. LeNet-5 on `{DEVICE}` (latency ESTIMATED: host LiteRT x "
        f"scale), budgets {BUDGETS}, accuracy demand per data set {ACCURACY}. Per data set and seed one base model "
        f"({c['base_epochs']} epochs); each strategy {c['evaluations']} distinct backbones, no early stop, best "
        "candidate feasible on the search split (A by its 90% one-sided Wilson lower bound) or else best reward, then "
        "measured on the test split at its tau with no further fine-tune"
        + (f" (and, in `feasible_as_compiled`, as the compile delivers it: fine-tuned {c['final_epochs']} more epochs "
           "on the whole training split, tau chosen again on the search split)" if c.get("final_epochs") else "")
        + ". Rank test: one-sided Wilcoxon signed-rank "
        f"on per-seed best rewards, hgen > baseline. Seeds: {c['seeds']}; split cap: {c['limit']}.",
        "",
        f"Data sets in this run: {c['datasets']}, {c['seeds']} seeds (the issue's full run is D2, D4 and D5 with 10 "
        "seeds each). The machine's 2 cores were shared with other work (the note says how), so wall times are "
        "upper bounds.",
        "",
        *([c["note"], ""] if c.get("note") else []),
        "hgen screens: each episode its DQN proposes 4 plans, and of those that would cost a fine-tune only the one "
        "whose untrained rewrite stays closest to the base model (minus KL on 500 training images, "
        "`compiler/search/screen.py`) is fine-tuned; the budget counts fine-tuned backbones only, so hgen's wall time "
        "includes the screening. How well the proxy ranks plans: search_quality_proxy.md. hgen warm-starts: its first "
        "episode also proposes the plans that rewrite the fewest layers within the budgets on paper, gentlest first, "
        "at most 8 (`compiler/search/warm_start.py`); the best screened of them is fine-tuned besides the best "
        "screened DQN proposal, so hgen's first episode costs two of its backbones.",
        "",
        "What the demands are set against, per data set (median over seeds of the uncompressed base on the test split: "
        "alone, and with people at the most accurate tau whose labour meets L_c on the search split; its S is "
        "0.282 MB, over the budget): a demand between the two needs people, and above the second the base itself "
        "does not reach it.",
        "",
        markdown_table(references(result["runs"]), ["dataset", "seeds", "demand", "median_alone_test_accuracy",
                                                    "median_with_people_test_accuracy", "median_test_labour"]),
        "",
        markdown_table(result["rows"], ["dataset", "strategy", "seeds", "feasible_on_search", "feasible_on_test",
                                        "feasible_as_compiled", "median_reward", "median_test_accuracy",
                                        "median_wall_s",
                                        "wilcoxon_p_hgen_greater"]),
        "",
        *[f"- {line}" for line in result["verdicts"]],
        "",
        (f"Wall time of this part: {result['wall_seconds']:.0f} s" if c.get("ran") else "This report only merges parts")
        + (f"; earlier parts merged into this report: {c['merged']}" if c.get("merged") else "")
        + (f". Commit measured: {c['commit']}" if c.get("commit") else "")
        + f". Per-seed rows are in {c.get('name', 'search_quality')}.json (`runs`).",
    ])


def merged(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """This run's rows plus those of earlier parts (results/NAME.json), so a long benchmark can run in pieces."""
    from benchlib import RESULTS

    out = list(runs)
    for name in names:
        out += json.loads((RESULTS / f"{name}.json").read_text())["runs"]
    counts = Counter((r["dataset"], r["strategy"], r["seed"]) for r in out)
    repeated = sorted(k for k, n in counts.items() if n > 1)
    if repeated:
        raise SystemExit(f"the same (dataset, strategy, seed) appears twice: {repeated}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="D2,D4,D5")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (run a long benchmark in parts)")
    parser.add_argument("--merge", default="",
                        help="comma-separated result names whose per-seed runs are reported with this run's (parts "
                             "of one benchmark run at the same commit; a repeated (dataset, strategy, seed) is an error)")
    parser.add_argument("--commit", default="", help="the commit measured (recorded in the report)")
    parser.add_argument("--evaluations", type=int, default=12)
    parser.add_argument("--base-epochs", type=int, default=5)
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--final-epochs", type=int, default=0,
                        help="also measure the winner as a compile delivers it: fine-tuned this many more epochs on "
                             "the whole training split, tau chosen again (0: the search's own verdict only)")
    parser.add_argument("--limit", type=int, default=None, help="cap every split (quick runs)")
    parser.add_argument("--name", default="search_quality", help="results file name")
    parser.add_argument("--note", default="", help="a paragraph for the report (what changed since the last run)")
    args = parser.parse_args()
    args.strategies = tuple(s for s in args.strategies.split(",") if s)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for name in filter(None, args.datasets.split(",")):
        runs += run_dataset(name, args)
    runs = merged(runs, [n for n in args.merge.split(",") if n])
    summary = summary_rows(runs)
    datasets = ",".join(sorted({r["dataset"] for r in runs}))
    seeds = len({r["seed"] for r in runs})
    result = {"config": {"datasets": datasets, "seeds": seeds, "merged": args.merge, "commit": args.commit,
                         "ran": args.datasets, "evaluations": args.evaluations,
                         "base_epochs": args.base_epochs, "final_epochs": args.final_epochs, "limit": args.limit, "device": DEVICE, "note": args.note,
                         "name": args.name,
                         "budgets": BUDGETS, "accuracy": ACCURACY, "annotators": "simulated"},
              "rows": summary, "runs": runs, "verdicts": verdicts(summary),
              "wall_seconds": time.perf_counter() - start}
    from benchlib import machine

    result["machine"] = machine()
    text = markdown(result)
    write_results(args.name, result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
