"""Part (a) of the adaptive benchmark (issue 22, AdaSpring): a replayed battery + load + hub trace through the
agent's `Selector` (Eq. 1 + hysteresis) over the variant set `compile_variants` ships.

The trace (STEPS selections, one every STEP_S seconds): the battery drains 0.85 -> 0.3; a CPU hog runs from step
HOG[0] to HOG[1] (every inference LOAD times slower, the factor measured on this machine with a real busy-loop
process next to the LiteRT engine); the hub is away from step AWAY[0] to AWAY[1] (labour 0, the offline policy).
At every step the chosen option is checked against the latency budget (inference under load) and the storage
budget. Accuracy, energy and labour are the compile's predictions on the test split for the option that runs;
they are compared with the best fixed variant (one variant for the whole trace, its best level the context allows)
and with the best choice in hindsight (per step, Eq. 1's optimum with no hysteresis).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from hgen.edge_agent.adapt.selector import Selector
from hgen.edge_agent.config import AdaptConfig
from hgen.runtime.bundle.variants import VariantSet
from hgen.runtime.variants import Budgets, Context, OptionTable, constraints, scores

STEPS, STEP_S = 600, 2.0
HOG, AWAY = (150, 300), (350, 450)
LABOUR_SHARE = 0.05


def _spin(stop: Any) -> None:
    while not stop.is_set():
        pass


def measured_load(member: Path, public_key: str, repeats: int = 300) -> dict[str, float]:
    """p50 inference latency of one member's LiteRT engine alone and beside one busy process per core."""
    from hgen.runtime.bundle.loader import load_bundle

    with load_bundle(member, trusted_public_key=public_key, engines=["litert"]) as loaded:
        engine = loaded.engine
        x = np.zeros(engine.input_spec.shape, np.float32)

        def p50() -> float:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                engine.run(x)
                times.append((time.perf_counter() - start) * 1e3)
            return float(np.median(times))

        engine.run(x)
        calm = p50()
        stop = multiprocessing.Event()
        hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                for _ in range(multiprocessing.cpu_count())]
        for hog in hogs:
            hog.start()
        try:
            busy = p50()
        finally:
            stop.set()
            for hog in hogs:
                hog.join(timeout=10)
    return {"calm_ms": calm, "hog_ms": busy, "load": max(1.0, busy / calm)}


def trace(load: float) -> list[dict[str, Any]]:
    """The context per step (battery, load, hub), as a device would read it."""
    battery = np.linspace(0.85, 0.3, STEPS)
    return [{"step": i, "t": i * STEP_S, "battery": float(battery[i]),
             "load": load if HOG[0] <= i < HOG[1] else 1.0, "hub": not AWAY[0] <= i < AWAY[1]} for i in range(STEPS)]


def context_of(row: dict[str, Any]) -> Context:
    return Context(battery=row["battery"], charging=False, load=row["load"], free_memory_mb=None,
                   labour_allowed=LABOUR_SHARE if row["hub"] else 0.0)


def _metrics(table: OptionTable, spent: np.ndarray, picks: list[int], rows: list[dict[str, Any]],
             budgets: Budgets) -> dict[str, Any]:
    picks_arr = np.asarray(picks)
    violations = sum(1 for i, row in zip(picks, rows)
                     if i < 0 or not all(mask[i] for name, mask in constraints(table, budgets, context_of(row)).items()
                                         if name in ("latency", "storage")))
    valid = picks_arr[picks_arr >= 0]
    objective = [scores(table, budgets, context_of(row))[0][i] for i, row in zip(picks, rows) if i >= 0]
    return {"accuracy": float(table.accuracy[valid].mean()), "energy_mj": float(table.energy[valid].mean()),
            "labour": float(spent[valid].mean()), "budget_violations": violations,
            "objective": float(np.mean([o for o in objective if np.isfinite(o)])) if objective else float("nan"),
            "switches": int(np.sum(table.variant[valid][1:] != table.variant[valid][:-1]))}


def run_trace(variants: VariantSet, load: float, latency_budget_ms: float, repeats: int,
              accuracy: float | None = None) -> dict[str, Any]:
    """The selector over the trace (`accuracy` replaces the compile's accuracy demand when given)."""
    d = variants.index.demands
    budgets = Budgets(d.accuracy if accuracy is None else accuracy, latency_budget_ms, d.storage_mb, d.energy_mj)
    rows = trace(load)
    config = AdaptConfig(interval_s=STEP_S, margin=0.05, dwell=3, min_switch_interval_s=30.0)
    select_ms: list[float] = []
    picks: list[int] = []
    steps: list[dict[str, Any]] = []
    first: list[int] = []
    for repeat in range(repeats):
        selector = Selector(variants.specs, budgets, config)
        picks = []
        for row in rows:
            decision = selector.decide(context_of(row), row["t"])
            select_ms.append(decision.select_ms)
            running = selector.running
            index = -1 if running is None else int(np.flatnonzero((selector.table.variant == running[0])
                                                                  & (selector.table.level == running[1]))[0])
            picks.append(index)
            if repeat == 0 and (decision.switch or row["step"] in (0, HOG[0], HOG[1], AWAY[0], AWAY[1])):
                steps.append({"step": row["step"], "battery": round(row["battery"], 3), "load": row["load"],
                              "hub": row["hub"], "variant": variants.index.variants[decision.variant].name,
                              "tau": round(decision.tau, 3), "switch": decision.switch, "why": decision.reason})
        first = first or list(picks)
    table = OptionTable.of(variants.specs)
    spent = np.array([lv.labour if lv.labour_measured is None else lv.labour_measured
                      for entry in variants.index.variants for lv in entry.levels])  # the table's order
    adaptive = _metrics(table, spent, picks, rows, budgets)
    oracle_picks = [int(np.argmax(scores(table, budgets, context_of(row))[0])) for row in rows]
    oracle = _metrics(table, spent, oracle_picks, rows, budgets)
    fixed = {}
    for v, entry in enumerate(variants.index.variants):
        mine = []
        for row in rows:
            score, _ = scores(table, budgets, context_of(row))
            score = np.where(table.variant == v, score, -np.inf)
            allowed = (table.variant == v) & (table.labour <= context_of(row).labour_allowed + 1e-12)
            mine.append(int(np.argmax(score)) if np.isfinite(score.max())
                        else int(np.flatnonzero(allowed)[np.argmax(table.accuracy[allowed])]))
        fixed[entry.name] = _metrics(table, spent, mine, rows, budgets)
    best_fixed = max(fixed, key=lambda name: (-fixed[name]["budget_violations"], fixed[name]["objective"]))
    return {"steps": STEPS, "step_s": STEP_S, "hog_steps": list(HOG), "hub_away_steps": list(AWAY),
            "load": load, "latency_budget_ms": latency_budget_ms, "budgets": budgets.__dict__,
            "budget_violations": adaptive["budget_violations"],
            "select_ms_p50": float(np.percentile(select_ms, 50)), "select_ms_p99": float(np.percentile(select_ms, 99)),
            "adaptive": adaptive, "hindsight": oracle, "fixed": fixed, "best_fixed": best_fixed,
            "decisions": steps, "repeats": repeats,
            "timeline": {"battery": [r["battery"] for r in rows], "load": [r["load"] for r in rows],
                         "hub": [int(r["hub"]) for r in rows], "variant": [int(table.variant[i]) for i in first],
                         "tau": [float(table.tau[i]) for i in first],
                         "hindsight_variant": [int(table.variant[i]) for i in oracle_picks]}}
