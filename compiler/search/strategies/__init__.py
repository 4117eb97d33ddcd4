"""Search strategies by name, all driving the same `SearchContext` (and so the same evaluator and reward).

`hgen` (dueling DQN + DDPG), `adadeep` (stage one only, no people: the paper's baseline), `random`, `optuna`.
"""

from __future__ import annotations

from collections.abc import Callable

from hgen.compiler.errors import UnknownNameError
from hgen.compiler.search.context import SearchContext
from hgen.runtime.registry import Registry, discover

Strategy = Callable[[SearchContext, int], None]
STRATEGIES: Registry[Strategy] = Registry("search strategy", UnknownNameError)


def get_strategy(name: str) -> Strategy:
    discover(__name__)
    return STRATEGIES.get(name)


def strategy_names() -> list[str]:
    discover(__name__)
    return STRATEGIES.names()
