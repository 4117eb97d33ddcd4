"""AdaDeep-style baseline: stage one only (dueling DQN over operators), no people (tau = 0, L = 0)."""

from __future__ import annotations

from hgen.compiler.search.context import SearchContext
from hgen.compiler.search.strategies import STRATEGIES
from hgen.compiler.search.strategies.hgen import run_rl


@STRATEGIES.register("adadeep")
def adadeep(ctx: SearchContext, seed: int) -> None:
    run_rl(ctx, seed, human=False)
