"""Search strategies by name, all driving the same `SearchContext` (and so the same evaluator and reward).

`hgen` (dueling DQN + DDPG), `adadeep` (stage one only, no people: the paper's baseline), `random`, `optuna`.
"""

from __future__ import annotations

from collections.abc import Callable

from hgen.compiler.errors import UnknownNameError
from hgen.compiler.search.context import SearchContext
from hgen.runtime.registry import Registry

Strategy = Callable[[SearchContext, int], None]
STRATEGIES: Registry[Strategy] = Registry("search strategy", UnknownNameError, package=__name__)


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.get(name)


def strategy_names() -> list[str]:
    return STRATEGIES.names()
