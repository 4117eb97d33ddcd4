"""`hgen data SPEC`: resolve a dataset spec and show where it came from (or why it was not found)."""

from __future__ import annotations

import argparse

from hgen.compiler.cli import VERBS, Verb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="dataset spec, e.g. fashion-mnist:lowres, mnist:noise?variance=0.2, D5, digits")
    parser.add_argument("--root", help="explicit dataset folder, tried first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--download", action="store_true", help="allow a network download when nothing is found")


def run(args: argparse.Namespace) -> None:
    from hgen.compiler.data import load_dataset

    data = load_dataset(args.spec, root=args.root, seed=args.seed, allow_download=args.download)
    print(f"dataset   {data.name}")
    print(f"origin    {data.origin}")
    print(f"splits    train {len(data.train)}, validation {len(data.val)}, test {len(data.test)}")
    print(f"input     {data.input_shape} float32 in [0, 1]")
    print(f"classes   {', '.join(data.labels)}")


VERBS.add("data", Verb("data", "resolve a dataset spec and describe it", add_arguments, run))
