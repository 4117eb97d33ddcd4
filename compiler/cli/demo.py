"""`hgen demo`: the main job end to end on the embedded default (compile -> deploy -> people -> retrain -> swap)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hgen.compiler.cli import VERBS, Verb
from hgen.compiler.errors import InvalidArgumentError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="auto:lowres",
                        help="dataset spec or a path to your own images (default %(default)s)")
    parser.add_argument("--model", default="lenet5", help="zoo model or a .keras file (default %(default)s)")
    for flag, unit in (("accuracy", ""), ("latency-ms", " ms"), ("storage-mb", " MB"), ("energy-mj", " mJ"),
                       ("labour", "")):
        parser.add_argument(f"--{flag}", type=float, default=None,
                            help=f"demand{unit} (all five together; default: the dataset's preset)")
    parser.add_argument("--out", type=Path, default=Path("build/demo"), help="where everything goes")
    parser.add_argument("--transport", default="auto", help="auto (MQTT when mosquitto is installed), grpc, mqtt")
    parser.add_argument("--episodes", type=int, default=12, help="search episode budget")
    parser.add_argument("--retrain-threshold", type=int, default=150, help="human labels that trigger a retrain")
    parser.add_argument("--fps", type=float, default=100.0, help="frame rate of the generated video")
    parser.add_argument("--frames-after-swap", type=int, default=1500)
    parser.add_argument("--limit", type=int, default=None, help="cap every split (quick runs)")
    parser.add_argument("--field", default=None, help="a condition only the field shows (noise, lowres, lowlight, "
                        "blur): compile on --dataset, stream and evaluate its images under it")
    parser.add_argument("--audit-share", type=float, default=0.02,
                        help="share of confident frames also sent to people (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-minutes", type=float, default=20.0,
                        help="give up if no retrain is published and swapped in within this long (default %(default)s)")


def demands(args: argparse.Namespace) -> dict[str, float] | None:
    """All five demand flags, or none (the preset); a partial set is a usage error, not a silent mix."""
    values = {"accuracy": args.accuracy, "latency_ms": args.latency_ms, "storage_mb": args.storage_mb,
              "energy_mj": args.energy_mj, "labour": args.labour}
    given = {k: v for k, v in values.items() if v is not None}
    if given and len(given) != len(values):
        raise InvalidArgumentError(f"give all five demands or none; missing: {', '.join(sorted(set(values) - set(given)))}")
    return given or None


def run(args: argparse.Namespace) -> None:
    from hgen.compiler.demo import demo_config, run_demo

    config = demo_config(dataset=args.dataset, model=args.model, out=str(args.out), transport=args.transport,
                         episodes=args.episodes, retrain_threshold=args.retrain_threshold, fps=args.fps,
                         frames_after_swap=args.frames_after_swap, limit=args.limit, seed=args.seed,
                         field=args.field, audit_share=args.audit_share, timeout_minutes=args.timeout_minutes,
                         demands=demands(args))
    run_demo(config, log=lambda message: print(message, flush=True))


VERBS.add("demo", Verb("demo", "run the whole product end to end on the embedded default", add_arguments, run))
