"""Random search: layer by layer, a uniformly random operator among those that keep the plan valid, then a random
threshold refined exactly as H-Gen's is (the best-rewarded tau within L_c and T_d), so the comparison is of the
plans found."""

from __future__ import annotations

import numpy as np

from hgen.compiler.search.context import SearchContext
from hgen.compiler.search.strategies import STRATEGIES


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
        ctx.score(plan, float(rng.random()), refine=True)
