"""TVM tuning benchmark: how long MetaSchedule tuning of LeNet-5 (float, x86_64 host) takes, per trial budget.

This is where the tuning time lives; tests/integration/test_tvm_tuning.py asserts only behaviour (tuned output
equals untuned), never a duration.

Two measurements, both with TensorFlow loaded as in the test process:
- cold: a fresh Python process per repeat does what the test does: build the TFLite model, tune with the
  `test` budget, compile untuned. Its first tuning pays TVM's one-off `import tvm.s_tir.tensor_intrin`
  (~10 s alone, 30-40 s with TensorFlow loaded; see results/tvm_tuning_notes.md), so this is the figure a
  test run sees.
- warm: in this process, after one warm-up tuning, each budget is tuned `--repeats` times.
Every figure is a median over the repeats; `tuning_s` = compile with tuning minus compile without (the
median untuned compile of the same process). Each run also checks that the tuned library computes what the
untuned one does (max |difference| on 8 random inputs) and counts the trials MetaSchedule measured.

Run (full: 3 cold + 3 warm repeats of every budget, about 5 minutes on a 2-core host):
    .venv/bin/python tools/bench/tvm_tuning.py
Smallest (a smoke check, about 2 minutes):
    .venv/bin/python tools/bench/tvm_tuning.py --repeats 1 --cold-repeats 1 --budgets test --out /tmp/tvm-tuning
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import RESULTS, machine, markdown_table, write_results

from hgen.compiler.lowering import TFLiteModel, lower_tflite, lower_tvm
from hgen.compiler.lowering.tuning import TuneConfig, TuningDependencyError
from hgen.compiler.models import build_model
from hgen.runtime.engines import open_engine

NAME = "tvm_tuning"
# `test` is what tests/integration/test_tvm_tuning.py runs; `small` its former budget (an 8-trial run that a
# test once bounded at 120 s and that took 235 s on another machine); `default` is TuneConfig's defaults, as
# used by the engines benchmark for LeNet-5.
BUDGETS = {
    "test": TuneConfig(trials=4, trials_per_task=4, trials_per_iter=4, max_tasks=1),
    "small": TuneConfig(trials=8, trials_per_task=4, trials_per_iter=4, max_tasks=2),
    "default": TuneConfig(trials=64, trials_per_task=8),
}
COLD_BUDGET = "test"


def lenet_tflite() -> TFLiteModel:
    import keras

    keras.utils.set_random_seed(0)
    return lower_tflite(build_model("lenet5", (28, 28, 1), 10), quantize="float")


def measured_trials(work_dir: Path) -> int:
    """Trials MetaSchedule timed, from its per-task logs (as tests/integration/test_tvm_tuning.py counts them)."""
    logs = [path for path in (work_dir / "logs").glob("*task_*.log") if "task_scheduler" not in path.name]
    return sum(path.read_text().count("Best GFLOPs") for path in logs)


def _run(library: Any, tflite: TFLiteModel, images: np.ndarray) -> np.ndarray:
    config = {"input_shape": list(tflite.input_shape), "output_shape": list(tflite.output_shape)}
    return open_engine("tvm", library.path, config).run(images)


def one_run(tflite: TFLiteModel, budget: str, work: Path) -> dict[str, Any]:
    """Tune and compile, then compile untuned; wall seconds of each, trials measured, tuned vs untuned."""
    config = TuneConfig(**{**vars(BUDGETS[budget]), "work_dir": work / "tuning"})
    start = time.perf_counter()
    tuned = lower_tvm(tflite.content, "x86_64", work / "tuned", tuning=config)
    tuned_s = time.perf_counter() - start
    start = time.perf_counter()
    untuned = lower_tvm(tflite.content, "x86_64", work / "untuned")
    untuned_s = time.perf_counter() - start
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    difference = float(np.max(np.abs(_run(tuned, tflite, images) - _run(untuned, tflite, images))))
    return {"tuned_compile_s": tuned_s, "untuned_compile_s": untuned_s, "trials": measured_trials(work / "tuning"),
            "max_abs_diff": difference}


def cold_child() -> None:
    """In a fresh process: what the test does, timed from before the model is built."""
    start = time.perf_counter()
    tflite = lenet_tflite()
    model_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="hgen-tune-") as tmp:
        try:
            row = one_run(tflite, COLD_BUDGET, Path(tmp))
        except TuningDependencyError as exc:
            print(json.dumps({"unavailable": str(exc)}))
            return
    print(json.dumps({**row, "model_s": model_s, "process_s": time.perf_counter() - start}))


def cold(repeats: int) -> list[dict[str, Any]]:
    runs = []
    for index in range(repeats):
        print(f"cold {index + 1}/{repeats} ({COLD_BUDGET} budget, fresh process)", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--cold-child"], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"cold run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        if "unavailable" in run:
            raise TuningDependencyError(run["unavailable"])
        runs.append(run)
    return runs


def warm(tflite: TFLiteModel, budgets: list[str], repeats: int) -> dict[str, list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="hgen-tune-") as tmp:
        print("warm-up tuning (pays the one-off TVM import)", file=sys.stderr, flush=True)
        one_run(tflite, budgets[0], Path(tmp, "warm-up"))
        runs: dict[str, list[dict[str, Any]]] = {}
        for budget in budgets:
            for index in range(repeats):
                print(f"warm {budget} {index + 1}/{repeats}", file=sys.stderr, flush=True)
                runs.setdefault(budget, []).append(one_run(tflite, budget, Path(tmp, f"{budget}-{index}")))
    return runs


def summary(budget: str, runs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    config = BUDGETS[budget]
    row = {"kind": kind, "budget": budget, "trials_budget": config.trials, "trials_per_task": config.trials_per_task,
           "max_tasks": config.max_tasks or "all", "repeats": len(runs),
           "median_tuned_compile_s": median("tuned_compile_s"), "median_untuned_compile_s": median("untuned_compile_s"),
           "median_tuning_s": statistics.median(r["tuned_compile_s"] - r["untuned_compile_s"] for r in runs),
           "min_trials_measured": min(run["trials"] for run in runs),
           "max_abs_diff": max(run["max_abs_diff"] for run in runs)}
    if kind == "cold":
        row["median_process_s"] = median("process_s")
    return row


def package_versions() -> dict[str, str]:
    found = {}
    for name in ("apache-tvm", "apache-tvm-ffi", "tensorflow-cpu", "tensorflow", "keras", "psutil"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def markdown(data: dict[str, Any]) -> str:
    machine, rows = data["machine"], data["rows"]
    columns = ["kind", "budget", "trials_budget", "trials_per_task", "max_tasks", "repeats", "median_tuning_s",
               "median_tuned_compile_s", "median_untuned_compile_s", "median_process_s", "min_trials_measured",
               "max_abs_diff"]
    packages = ", ".join(f"{k} {v}" for k, v in data["packages"].items())
    return f"""# TVM tuning: MetaSchedule on LeNet-5 (float, x86_64 host)

Machine: {machine["cpu"]}, {machine["cores"]} cores, GPU: {machine["gpu"]}, {machine["os"]}, Python {machine["python"]}.
Packages: {packages}.
Repeats: {data["cold_repeats"]} cold (a fresh process each), {data["repeats"]} warm per budget; every figure is
the median over the repeats, in wall seconds (time.perf_counter).
`cold`: what tests/integration/test_tvm_tuning.py does in a fresh process with TensorFlow loaded; its first
tuning includes TVM's one-off tensor-intrinsics import (see tvm_tuning_notes.md). `median_process_s` = model
build + tuned compile + untuned compile. `warm`: the same process after a warm-up tuning, so only the search,
builds and measurements count. `median_tuning_s` = tuned compile - untuned compile.
`min_trials_measured`: trials MetaSchedule timed (from its logs); `max_abs_diff`: tuned vs untuned outputs on
8 random inputs (the test's tolerance is 1e-4).
Caveat: the machine may be shared with other jobs; compare rows of one run rather than numbers across runs.

{markdown_table(rows, columns)}

Command: `{data["command"]}`
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats per budget (default 3)")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh-process repeats (default 3; 0 skips)")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help=f"comma-separated, of {', '.join(BUDGETS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for tvm_tuning.json and .md")
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        cold_child()
        return 0
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    unknown = [b for b in budgets if b not in BUDGETS]
    if unknown or not budgets or args.repeats < 1 or args.cold_repeats < 0:
        parser.error(f"budgets must be among {', '.join(BUDGETS)} (got {unknown or 'none'}); repeats >= 1")

    try:  # cold first: the fresh processes then do not share the host with this one's TensorFlow and TVM
        rows = [summary(COLD_BUDGET, cold(args.cold_repeats), "cold")] if args.cold_repeats else []
        warm_runs = warm(lenet_tflite(), budgets, args.repeats)
    except TuningDependencyError as exc:
        print(f"MetaSchedule unavailable here, nothing measured: {exc}", file=sys.stderr)
        return 1
    rows += [summary(budget, runs, "warm") for budget, runs in warm_runs.items()]
    command = "python tools/bench/tvm_tuning.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data = {"machine": machine(), "repeats": args.repeats, "cold_repeats": args.cold_repeats,
            "packages": package_versions(), "rows": rows, "command": command.strip(),
            "budgets": {b: {k: str(v) for k, v in vars(BUDGETS[b]).items()} for b in budgets}}
    json_path, md_path = write_results(NAME, data, markdown(data), folder=args.out)
    print(markdown_table(rows, ["kind", "budget", "repeats", "median_tuning_s", "median_process_s",
                                "min_trials_measured", "max_abs_diff"]))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
