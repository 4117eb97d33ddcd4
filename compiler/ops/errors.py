"""Typed errors of the compression-operator library.

`OperatorError` names the layer and the operator so a search log says exactly which candidate was impossible;
`PlanError` carries every problem of a plan at once, so a user fixes a hand-written plan in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from hgen.compiler.errors import CompilerError


class OperatorError(CompilerError, ValueError):
    """An operator cannot be applied to a layer (wrong layer type, rank too large, grouped conv, ...)."""

    def __init__(self, layer: str, operator: str, reason: str) -> None:
        super().__init__(f"layer '{layer}': operator '{operator}': {reason}")
        self.layer = layer
        self.operator = operator
        self.reason = reason


class PlanError(CompilerError, ValueError):
    """A plan does not fit a model; `problems` lists every problem found, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid compression plan ({len(self.problems)} problem(s)):\n{lines}")


class RewriteError(CompilerError):
    """The model's graph cannot be rebuilt (subclassed model, shared layer, Sequential without an input shape)."""
