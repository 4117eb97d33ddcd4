"""`hgen compile` / `hgen-compile`: search, fine-tune, calibrate, lower and sign an H-DNN for a device."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from hgen.compiler.cli import VERBS, Verb

if TYPE_CHECKING:
    from hgen.compiler.compile import CompileConfig


def _names(names: list[str]) -> str:
    return ", ".join(names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The choices are read from the registries (cheap: no TensorFlow), so the help cannot go stale.
    from hgen.compiler.bundle.engines import BUNDLE_ENGINES
    from hgen.compiler.compile import CompileConfig
    from hgen.compiler.models import model_names
    from hgen.compiler.search.devices import DEVICES
    from hgen.compiler.search.strategies import STRATEGIES

    parser.add_argument("--model", default=None,
                        help=f"zoo model ({_names(model_names())}) or a Keras model file (.keras/.h5); default: "
                             f"{CompileConfig.model_fields['model'].default}, or the default detector on a detection "
                             "data set")
    parser.add_argument("--weights", default=None,
                        help="pretrained backbone weights of a zoo model that takes them (e.g. imagenet for "
                             "mobilenet_v2; the model's options check the name), from the Keras cache or downloaded "
                             "into it; the backbone is then transfer-trained (head first, then fine-tuned)")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="zoo model option, repeatable (alpha=0.35 for mobilenet_v2, blocks=3 for resnet_small)")
    parser.add_argument("--base-epochs", type=int, default=5, help="epochs to train (or fine-tune) a zoo backbone")
    parser.add_argument("--head-epochs", type=int, default=3,
                        help="with --weights: epochs training the head on the frozen backbone first")
    parser.add_argument("--dataset", default="fashion-mnist:lowres", help="dataset spec (default %(default)s)")
    parser.add_argument("--device", default="rpi4", help=f"device profile: {_names(DEVICES.names())}")
    parser.add_argument("--accuracy", type=float, default=0.85, help="A_d, minimum accuracy (fraction)")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="T_d, maximum mean latency per sample")
    parser.add_argument("--storage-mb", type=float, default=2.0, help="S_c, storage budget")
    parser.add_argument("--energy-mj", type=float, default=3.0, help="E_c, energy budget per inference")
    parser.add_argument("--labour", type=float, default=0.03, help="L_c, labour budget (Eq. 13 ratio, <= 0.1)")
    parser.add_argument("--strategy", default="hgen", help=f"search strategy: {_names(STRATEGIES.names())}")
    parser.add_argument("--budget-minutes", type=float, default=15.0,
                        help="wall time of the search (a fine-tune expected to end past it is not started); the "
                             "base training and the final fine-tune come on top (default %(default)s)")
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--evaluations", type=int, default=None, help="cap on distinct backbones evaluated")
    parser.add_argument("--keep-searching", action="store_true", help="do not stop at the first feasible candidate")
    parser.add_argument("--accuracy-confidence", type=float, default=0.9,
                        help="the search counts A as met when its one-sided Wilson lower bound at this confidence "
                             "does (0: the point estimate; default %(default)s)")
    parser.add_argument("--allow-miss", action="store_true",
                        help="exit 0 even when a demand is missed on the test split (the report says so either way)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="cap every split (quick runs)")
    parser.add_argument("--engines", default="litert",
                        help=f"comma-separated bundle engines from: {_names(BUNDLE_ENGINES.names())}")
    parser.add_argument("--quantize", choices=["float", "int8"], default="float",
                        help="what the device runs: int8 measures S at 8 bits and A, L, tau on the int8 model")
    parser.add_argument("--signing-key", default=None, help="Ed25519 private key (PEM); default: a new one in OUT/keys")
    parser.add_argument("--no-bundle", action="store_true", help="skip lowering and the bundle")
    parser.add_argument("--out", default="build/compile", help="output folder")


def model_options(pairs: list[str], weights: str | None) -> dict[str, float | int | bool | str]:
    """`KEY=VALUE` strings -> options (numbers and true/false parsed; the model's config checks the rest)."""
    from hgen.compiler.errors import InvalidArgumentError

    options: dict[str, float | int | bool | str] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--model-option takes KEY=VALUE, got '{pair}'")
        options[key.strip()] = _value(text.strip())
    if weights:
        options["weights"] = weights
    return options


def _value(text: str) -> float | int | bool | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def config_from(args: argparse.Namespace) -> CompileConfig:
    """The compile settings; `model` only when given, so a detection compile can tell "not chosen" apart."""
    from hgen.compiler.compile import compile_config

    demands = {"accuracy": args.accuracy, "latency_ms": args.latency_ms, "storage_mb": args.storage_mb,
               "energy_mj": args.energy_mj, "labour": args.labour}
    chosen = {"model": args.model} if args.model is not None else {}
    return compile_config(**chosen, model_options=model_options(args.model_option, args.weights),
                          base_epochs=args.base_epochs, head_epochs=args.head_epochs,
                          dataset=args.dataset, device=args.device, demands=demands,
                          strategy=args.strategy, budget_minutes=args.budget_minutes, episodes=args.episodes,
                          evaluations=args.evaluations, stop_at_feasible=not args.keep_searching, seed=args.seed,
                          accuracy_confidence=args.accuracy_confidence,
                          limit=args.limit, engines=tuple(e for e in args.engines.split(",") if e),
                          quantize=args.quantize, signing_key=args.signing_key, bundle=not args.no_bundle, out=args.out)


def run(args: argparse.Namespace) -> None:
    from hgen.compiler.compile import compile_hdnn

    result = compile_hdnn(config_from(args), log=lambda message: print(message, file=sys.stderr, flush=True))
    summary = result.summary
    o, f = summary["origin"], summary["final"]
    print(f"origin : {_accuracy(summary, o)}  T {o['latency_ms']:.2f} ms  S {o['storage_mb']:.4f} MB  "
          f"E {o['energy_mj']:.4f} mJ  L {o['labour']:.4f}")
    print(f"H-DNN  : {_accuracy(summary, f)}  T {f['latency_ms']:.2f} ms  S {f['storage_mb']:.4f} MB  "
          f"E {f['energy_mj']:.4f} mJ  L {f['labour']:.4f}  (test split; annotators simulated"
          + ("; the int8 model" if summary.get("quantize") == "int8" else "") + ")")
    print(f"plan {summary['plan']}, tau {summary['tau']:.3f}; violations: {'; '.join(summary['violations']) or 'none'}")
    print(f"report {result.out / 'report.md'}" + (f"; bundle {summary['bundle']['archive']}" if "bundle" in summary else ""))
    if not summary["met_on_test"] and not args.allow_miss:
        from hgen.compiler.errors import DemandsNotMetError

        raise DemandsNotMetError("the H-DNN misses the demands on the test split (" + "; ".join(summary["violations"])
                                 + "); its artifacts are written; --allow-miss to exit 0")


VERBS.add("compile", Verb("compile", "search, fine-tune, calibrate, lower and sign an H-DNN", add_arguments, run))


def _accuracy(summary: dict[str, Any], row: dict[str, Any]) -> str:
    """A as the compile measured it: with people for a classifier, mAP@0.5 of the model alone for a detector."""
    if summary.get("accuracy_metric", "").startswith("mAP"):
        return f"mAP@0.5 {row['accuracy']:.4f} (model only)"
    return f"A {row['accuracy']:.4f} (model only {row['accuracy_model_only']:.4f})"
