"""Random search: a uniformly random valid operator per layer, then as many random thresholds as H-Gen tries."""

from __future__ import annotations

import numpy as np

from hgen.compiler.search.context import SearchContext
from hgen.compiler.search.strategies import STRATEGIES
from hgen.compiler.search.strategies.hgen import TAU_STEPS


@STRATEGIES.register("random")
def random_search(ctx: SearchContext, seed: int) -> None:
    rng = np.random.default_rng(seed)
    space = ctx.evaluator.space
    while True:
        ctx.next_episode()
        plan = {layer.name: str(rng.choice(layer.operators)) for layer in space.layers}
        for _ in range(TAU_STEPS + 1):
            ctx.score(plan, float(rng.random()))
