"""`hgen evaluate`: train and calibrate a backbone, then report A/T/S/E/L of its H-CNN at the given thresholds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hgen.compiler.cli import VERBS, Verb, fusion_lambda_arg
from hgen.runtime.hdnn import FUSION_LAMBDA_DEFAULT, FUSION_LAMBDA_TITLE

if TYPE_CHECKING:
    from hgen.compiler.study import StudyConfig


def add_study_arguments(parser: argparse.ArgumentParser, dataset: str = "fashion-mnist:lowres") -> None:
    parser.add_argument("--dataset", default=dataset, help="dataset spec (default %(default)s)")
    parser.add_argument("--model", default="lenet5", help="backbone from the model zoo (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--annotators", "-m", type=int, default=3, dest="m", help="annotators per sample")
    parser.add_argument("--annotator-accuracy", type=float, default=0.9)
    parser.add_argument("--fusion-lambda", type=fusion_lambda_arg, default=FUSION_LAMBDA_DEFAULT,
                        help=FUSION_LAMBDA_TITLE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="cap every split (quick runs)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--tau", type=float, action="append", help="threshold(s) in [0, 1]; repeatable")
    parser.add_argument("--json", type=Path, help="also write the results here")


def config_from(args: argparse.Namespace) -> StudyConfig:
    from hgen.compiler.study import study_config

    return study_config(dataset=args.dataset, model=args.model, epochs=args.epochs, m=args.m,
                        annotator_accuracy=args.annotator_accuracy, fusion_lambda=args.fusion_lambda,
                        seed=args.seed, limit=args.limit)


def format_rows(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table; floats with 4 significant digits."""
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    from hgen.compiler.study import evaluate_at, prepare_hcnn
    from hgen.runtime.hdnn import check_tau

    config = config_from(args)
    taus = [check_tau(t) for t in (args.tau or [0.5])]
    prepared = prepare_hcnn(config, log=lambda message: print(message, file=sys.stderr))
    rows = [evaluate_at(prepared, tau).to_dict() | prepared.system_metrics() for tau in taus]
    print(f"temperature {prepared.temperature:.3f}; ECE {prepared.ece_before:.4f} -> {prepared.ece_after:.4f}; "
          f"annotators are SIMULATED (m={config.m}, accuracy {config.annotator_accuracy})")
    print(format_rows(rows, ["tau", "accuracy_model", "accuracy_fused", "share_to_people", "labour",
                             "latency_ms", "storage_mb", "energy_mj"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": config.model_dump(), "temperature": prepared.temperature,
                                         "rows": rows}, indent=2))


VERBS.add("evaluate", Verb("evaluate", "train, calibrate and measure an H-CNN (A/T/S/E/L)", add_arguments, run))
