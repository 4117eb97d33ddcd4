"""`hgen demo`: the main job on the embedded default, in one command, leaving a summary behind.

Today it runs the H-CNN study (train, calibrate, simulated crowd, tau sweep) on `auto:lowres`: FashionMNIST when
installed, else scikit-learn's bundled digits. The compile -> deploy -> hub -> agent -> retrain stages join as they land.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hgen.compiler.cli import VERBS, Verb
from hgen.compiler.cli.evaluate import add_study_arguments, config_from, format_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser, dataset="auto:lowres")
    parser.set_defaults(epochs=3)
    parser.add_argument("--out", type=Path, default=Path("build/demo"), help="where the summary goes")


def run(args: argparse.Namespace) -> None:
    from hgen.compiler.study import evaluate_at, prepare_hcnn, tau_grid

    start = time.perf_counter()
    config = config_from(args)
    print(f"[1/3] data + training: {config.dataset}, {config.model}, {config.epochs} epochs", flush=True)
    prepared = prepare_hcnn(config, log=lambda message: print(f"      {message}", flush=True))
    print(f"[2/3] calibrated: T = {prepared.temperature:.3f}, ECE {prepared.ece_before:.4f} -> "
          f"{prepared.ece_after:.4f}", flush=True)
    rows = [evaluate_at(prepared, tau).to_dict() for tau in tau_grid(0.1, 0.9, 0.1)]
    print(f"[3/3] H-CNN through the runtime gate and fusion, m = {config.m} SIMULATED annotators:", flush=True)
    print(format_rows(rows, ["tau", "accuracy_model", "accuracy_fused", "share_to_people", "labour", "latency_ms"]))
    summary = {"dataset": prepared.dataset.name, "dataset_origin": prepared.dataset.origin,
               "temperature": prepared.temperature, "ece_before": prepared.ece_before,
               "ece_after": prepared.ece_after, "system": prepared.system_metrics(), "tau_sweep": rows,
               "annotators": "simulated", "stages_run": ["data", "train", "calibrate", "crowd", "tau_sweep"],
               "wall_seconds": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done in {summary['wall_seconds']:.0f} s on {prepared.dataset.origin}; summary in {path}", file=sys.stdout)


VERBS.add("demo", Verb("demo", "run the main job on the embedded default and write a summary", add_arguments, run))
