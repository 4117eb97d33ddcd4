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
    # The choices are read from the registries (cheap: no TensorFlow), so the help cannot go stale. Every setting
    # defaults to None here: only flags given on the command line override --config (defaults: CompileConfig's).
    from hgen.compiler.bundle.engines import BUNDLE_ENGINES
    from hgen.compiler.models import model_names
    from hgen.compiler.search.devices import DEVICES
    from hgen.compiler.search.strategies import STRATEGIES

    parser.add_argument("--config", default=None, metavar="FILE",
                        help="compile settings (YAML, the keys of docs/configuration.md: the file the hub's "
                             "retrain.models[].compile_config names); flags given here override its values")
    parser.add_argument("--model", default=None,
                        help=f"zoo model ({_names(model_names())}) or a Keras model file (.keras/.h5, logits out); "
                             f"default: {_default('model')}, or the default detector on a detection data set")
    parser.add_argument("--weights", default=None,
                        help="pretrained backbone weights of a zoo model that takes them (e.g. imagenet for "
                             "mobilenet_v2; the model's options check the name), from the Keras cache or downloaded "
                             "into it; the backbone is then transfer-trained (head first, then fine-tuned)")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="zoo model option, repeatable (alpha=0.35 for mobilenet_v2, blocks=3 for resnet_small)")
    parser.add_argument("--base-epochs", type=int, help=f"epochs to train (or fine-tune) a zoo backbone "
                                                        f"(default {_default('base_epochs')})")
    parser.add_argument("--head-epochs", type=int,
                        help=f"with --weights: epochs training the head on the frozen backbone first "
                             f"(default {_default('head_epochs')})")
    parser.add_argument("--bn-freeze-epochs", type=int, help=_title("bn_freeze_epochs"))
    parser.add_argument("--final-epochs", type=int, help=_title("final_epochs"))
    parser.add_argument("--finetune-samples", type=int, help=_title("finetune_samples"))
    parser.add_argument("--dataset", help=f"dataset spec (default {_default('dataset')})")
    parser.add_argument("--device", help=f"device profile: {_names(DEVICES.names())} (default {_default('device')})")
    parser.add_argument("--accuracy", type=float,
                        help=f"A_d, minimum accuracy (fraction; default {_demand('accuracy')})")
    parser.add_argument("--latency-ms", type=float,
                        help=f"T_d, maximum mean latency per sample (default {_demand('latency_ms')})")
    parser.add_argument("--storage-mb", type=float, help=f"S_c, storage budget (default {_demand('storage_mb')})")
    parser.add_argument("--energy-mj", type=float,
                        help=f"E_c, energy budget per inference (default {_demand('energy_mj')})")
    parser.add_argument("--labour", type=float,
                        help=f"L_c, labour budget (Eq. 13 ratio, <= 0.1; default {_demand('labour')})")
    parser.add_argument("--strategy", help=f"search strategy: {_names(STRATEGIES.names())} "
                                           f"(default {_default('strategy')})")
    parser.add_argument("--budget-minutes", type=float,
                        help="wall time of the search (a fine-tune expected to end past it is not started); the "
                             "base training and the final fine-tune come on top "
                             f"(default {_default('budget_minutes')})")
    parser.add_argument("--episodes", type=int, help=f"episode budget of the search (default {_default('episodes')})")
    parser.add_argument("--evaluations", type=int, help="cap on distinct backbones evaluated")
    parser.add_argument("--keep-searching", action="store_true", default=None,
                        help="do not stop at the first feasible candidate")
    parser.add_argument("--accuracy-confidence", type=float,
                        help="the search counts A as met when its one-sided Wilson lower bound at this confidence "
                             f"does (0: the point estimate; default {_default('accuracy_confidence')})")
    parser.add_argument("--allow-miss", action="store_true",
                        help="exit 0 even when a demand is missed on the test split (the report says so either way)")
    parser.add_argument("--seed", type=int, help=f"seed of splits, initial weights, training, crowd "
                                                 f"(default {_default('seed')})")
    parser.add_argument("--limit", type=int, help="cap every split (quick runs)")
    parser.add_argument("--annotators", type=int, dest="m", help=f"m, {_title('m')}")
    parser.add_argument("--annotator-accuracy", type=float, help=_title("annotator_accuracy"))
    parser.add_argument("--fusion-lambda", type=float, help=_title("fusion_lambda"))
    parser.add_argument("--familiarity-quantile", type=_quantile,
                        help="the familiarity check's quantile (hgen.runtime.familiarity: the device also asks "
                             "about frames outside the training images' ranges; default "
                             f"{_default('familiarity_quantile')}); '{OFF}': confidence alone decides")
    parser.add_argument("--engines",
                        help=f"comma-separated bundle engines from: {_names(BUNDLE_ENGINES.names())} "
                             f"(default {','.join(_default('engines'))})")
    parser.add_argument("--quantize", choices=["float", "int8"],
                        help="what the device runs: int8 measures S at 8 bits and A, L, tau on the int8 model "
                             f"(default {_default('quantize')})")
    parser.add_argument("--signing-key", help="Ed25519 private key (PEM); default: a new one in OUT/keys")
    parser.add_argument("--model-version", help=_title("model_version"))
    parser.add_argument("--no-bundle", action="store_true", default=None, help="skip lowering and the bundle")
    parser.add_argument("--out", help=f"output folder (default {_default('out')}); the artifacts of a previous "
                                      "compile there are removed first (keys/ and other files are kept)")


def _default(field: str) -> Any:
    from hgen.compiler.compile import CompileConfig

    return CompileConfig.model_fields[field].default


def _demand(field: str) -> Any:
    from hgen.compiler.search.objective import Demands

    return Demands.model_fields[field].default


def _title(field: str) -> str:
    """The setting's documented meaning, lower-cased into argparse's style, with its default."""
    from hgen.compiler.compile import CompileConfig

    info = CompileConfig.model_fields[field]
    title = info.title or ""
    return f"{title[:1].lower() + title[1:]} (default {info.default})"


OFF = "none"  # --familiarity-quantile none: the setting's None (a flag left out is None too, so not None here)


def _quantile(text: str) -> float | str:
    return OFF if text.strip().lower() in (OFF, "null", "off") else float(text)


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


# argparse dests that are settings of the same name (the demand flags go under `demands`)
_DEMAND_FLAGS = ("accuracy", "latency_ms", "storage_mb", "energy_mj", "labour")
# settings whose flag is not the setting itself (a flag per demand, `--model-option`, `--engines a,b`, `off`,
# `--keep-searching`, `--no-bundle`); every other setting's flag has its name (a test checks each has one)
_SHAPED_SETTINGS = frozenset({"demands", "model_options", "familiarity_quantile", "engines", "stop_at_feasible",
                              "bundle"})


def plain_settings() -> tuple[str, ...]:
    """The settings given by a flag of the same name, from CompileConfig itself (no hand list to forget one in)."""
    from hgen.compiler.compile import CompileConfig

    return tuple(name for name in CompileConfig.model_fields if name not in _SHAPED_SETTINGS)


def config_from(args: argparse.Namespace) -> CompileConfig:
    """The compile settings: --config's file (if given), with the flags given on the command line laid over it.
    `model` only when given (in either), so a detection compile can tell "not chosen" apart."""
    from hgen.compiler.compile import compile_settings
    from hgen.compiler.errors import InvalidArgumentError
    from hgen.runtime.config import read_config_mapping

    path = getattr(args, "config", None)
    values = read_config_mapping(path, error=InvalidArgumentError) if path else {}
    source = f"{path} (with the command-line flags)" if path else "compile settings"
    return compile_settings(overlay(values, flag_settings(args)), source=source)


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave (a flag left out is not a setting: the file's value or the default)."""
    given: dict[str, Any] = {key: getattr(args, key) for key in plain_settings()
                             if getattr(args, key, None) is not None}
    demands = {key: getattr(args, key) for key in _DEMAND_FLAGS if getattr(args, key, None) is not None}
    if demands:
        given["demands"] = demands
    options = model_options(args.model_option, args.weights)
    if options:
        given["model_options"] = options
    if args.familiarity_quantile is not None:
        given["familiarity_quantile"] = None if args.familiarity_quantile == OFF else args.familiarity_quantile
    if args.engines is not None:
        given["engines"] = tuple(e for e in args.engines.split(",") if e)
    if args.keep_searching:
        given["stop_at_feasible"] = False
    if args.no_bundle:
        given["bundle"] = False
    return given


def overlay(values: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """`flags` over the file's `values`; `demands` and `model_options` merged key by key (--accuracy alone keeps
    the file's other demands)."""
    merged = dict(values)
    for key, value in flags.items():
        below = merged.get(key)
        merged[key] = {**below, **value} if key in ("demands", "model_options") and isinstance(below, dict) else value
    return merged


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
