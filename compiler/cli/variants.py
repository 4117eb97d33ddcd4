"""`hgen variants`: the compile's search, then up to K Pareto-front variants in one signed variant set (issue 22).

Takes `hgen compile`'s arguments (the search keeps going past the first feasible candidate: the front needs more
than one) plus `-k` and the labour levels; writes OUT/variants (variants.json, variants.sig, one .hgb per variant).
"""

from __future__ import annotations

import argparse
import sys

from hgen.compiler.cli import VERBS, Verb
from hgen.compiler.cli.compile import add_arguments as compile_arguments
from hgen.compiler.cli.compile import config_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    compile_arguments(parser)
    parser.add_argument("-k", type=int, default=4, help="variants to ship at most (default %(default)s)")
    parser.add_argument("--labour-levels", default="0,0.02,0.05,0.1",
                        help="labour shares L to pick a tau for, per variant (default %(default)s; 0 = nobody asked)")


def levels(text: str) -> tuple[float, ...]:
    from hgen.compiler.errors import InvalidArgumentError

    try:
        values = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise InvalidArgumentError(f"--labour-levels: {exc}") from exc
    if not values or values[0] < 0 or values[-1] > 1:
        raise InvalidArgumentError(f"--labour-levels must be shares in [0, 1], got {text!r}")
    return values


def run(args: argparse.Namespace) -> None:
    from hgen.compiler.errors import InvalidArgumentError
    from hgen.compiler.variants import compile_variants

    if not 1 <= args.k <= 16:
        raise InvalidArgumentError(f"-k must be in 1..16, got {args.k}")
    result = compile_variants(config_from(args), k=args.k, labour_levels=levels(args.labour_levels),
                              log=lambda message: print(message, file=sys.stderr, flush=True))
    for entry in result["index"]["variants"]:
        top = entry["levels"][-1]
        print(f"{entry['name']}: T {entry['latency_ms']:.2f} ms  S {entry['storage_mb']:.4f} MB  "
              f"E {entry['energy_mj']:.4f} mJ  memory {entry['memory_mb']:.3f} MB  "
              f"A {entry['accuracy_model_only']:.4f} alone, {top['accuracy']:.4f} at L <= {top['labour']:.3f} "
              f"(tau {top['tau']:.3f}; annotators simulated)")
    print(f"variant set {result['dir']} ({result['variants']} of a front of {result['front']}); "
          f"public key {result['public_key']}")


VERBS.add("variants", Verb("variants", "search and ship up to K Pareto-front variants in one signed variant set",
                           add_arguments, run))
