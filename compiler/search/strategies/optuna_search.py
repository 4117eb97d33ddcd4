"""Optuna's multi-objective NSGA-II sampler over the same space: maximise accuracy, minimise latency, with the
storage, energy and labour budgets as constraints. Optuna cannot be told which operator combinations conflict, so a
conflicting proposal is repaired layer by layer (a choice that breaks the plan becomes identity) before scoring.
Repeated plans hit the evaluator's cache, so a trial that only changes tau is cheap, as it is for the others. The
suggested tau is refined exactly as H-Gen's is (the best-rewarded tau within L_c and T_d), so the comparison is fair."""

from __future__ import annotations

import math

from hgen.compiler.search.context import SearchContext, StopSearch
from hgen.compiler.search.objective import margins
from hgen.compiler.search.strategies import STRATEGIES


@STRATEGIES.register("optuna")
def optuna_search(ctx: SearchContext, seed: int) -> None:
    try:
        import optuna
    except ImportError:
        from hgen.compiler.errors import CompilerError

        raise CompilerError("the optuna strategy needs Optuna: pip install 'hgen[compiler]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our StopSearch would be logged as a failed trial
    space = ctx.evaluator.space
    constraints_key = "constraints"

    def objective(trial: "optuna.Trial") -> tuple[float, float]:
        ctx.next_episode()
        proposed = {layer.name: trial.suggest_categorical(layer.name, list(layer.operators)) for layer in space.layers}
        plan = space.repair(ctx.evaluator.base, proposed)
        candidate = ctx.score(plan, trial.suggest_float("tau", 0.0, 1.0), refine=True)
        if candidate.measured is None:
            trial.set_user_attr(constraints_key, [1.0, 1.0, 1.0])
            return 0.0, math.inf
        m = margins(candidate.measured, ctx.demands)
        trial.set_user_attr(constraints_key, [-m["storage"], -m["energy"], -m["labour"]])  # <= 0 is feasible
        return candidate.measured.accuracy, candidate.measured.latency_ms

    sampler = optuna.samplers.NSGAIISampler(seed=seed, constraints_func=lambda t: t.user_attrs[constraints_key])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    try:
        study.optimize(objective, n_trials=10**6, catch=())
    except StopSearch:
        pass
    raise StopSearch(ctx.stop_reason or "optuna finished")
