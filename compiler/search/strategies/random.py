"""Random search: layer by layer, a uniformly random operator among those that keep the plan valid, then as many
random thresholds per backbone as H-Gen tries."""

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
        plan: dict[str, str] = {}
        for position, layer in enumerate(space.layers):
            allowed = np.flatnonzero(space.valid_mask(ctx.evaluator.base, plan, position))
            plan[layer.name] = space.actions[int(rng.choice(allowed))]
        for _ in range(TAU_STEPS + 1):
            ctx.score(plan, float(rng.random()))
