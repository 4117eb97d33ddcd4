"""The `hgen` command: one module per verb (tvmc-style), each a thin layer over the Python API.

A verb module defines `VERB = Verb(name, help, add_arguments, run)` and registers it in `VERBS`;
`run` returns nothing and raises `HGenError` subclasses; only `main` turns errors into exit codes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from hgen.compiler.errors import UnknownNameError
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class Verb:
    """A sub-command: its arguments and the API call behind it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


VERBS: Registry[Verb] = Registry("command", UnknownNameError, package=__name__)


def fusion_lambda_arg(text: str) -> float:
    """`--fusion-lambda`: refused while the arguments are parsed (the bounds of hgen.runtime.hdnn), not after a
    model was converted or trained."""
    from hgen.runtime.errors import InvalidInputError
    from hgen.runtime.hdnn import check_fusion_lambda

    try:
        return check_fusion_lambda(float(text))
    except (ValueError, InvalidInputError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
