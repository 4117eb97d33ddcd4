"""H-Gen (paper Algorithm 1): per episode the dueling DQN picks an operator per layer, then DDPG picks tau.

The DQN only sees operators that keep the plan valid and leave a completion within S_c and E_c on paper
(`SearchContext.action_mask`), so no fine-tune is spent on a plan the budgets rule out. A threshold costs
microseconds, so DDPG's proposal is refined exactly on the search split (the best-rewarded tau within L_c and T_d,
`tau.py`) and DDPG learns from the threshold actually used; the episode's reward is broadcast to every DQN step.
Violations score in the hundreds, so the agents learn from `squash(reward)`, a monotone log compression: a clip would
flatten every serious violation to one value and hide which way is better.

Screening (`screen.py`): a fine-tuned backbone is what the budget counts, while a DQN proposal costs nothing, so each
episode the DQN proposes `ScreenConfig.proposals` plans; those that cost no fine-tune (rejected by the library or on
paper, or already evaluated) are scored as before, and of the rest only the one whose untrained rewrite stays closest
to the base model is fine-tuned. The DQN learns from every plan actually scored.

Warm start (`warm_start.py`): the first episode also proposes the plans that rewrite the fewest layers within the
budgets on paper; the DQN's first plans are random and on a deep backbone rewrite nearly every layer. The best
screened of them is fine-tuned besides the best screened DQN proposal: screened together, a weak base model's
untrained fidelity preferred a DQN plan that rewrote 35 of MobileNetV2's 36 layers (it fell to chance accuracy).
"""

from __future__ import annotations

import numpy as np

from hgen.compiler.search.context import Candidate, SearchContext
from hgen.compiler.search.ddpg import DDPG
from hgen.compiler.search.dqn import DuelingDQN, Transition
from hgen.compiler.search.screen import Screener, ScreenConfig
from hgen.compiler.search.space import plan_key
from hgen.compiler.search.strategies import STRATEGIES
from hgen.compiler.search.warm_start import fewest_rewrites


def squash(reward: float) -> float:
    """sign(r) * log(1 + |r|): keeps the order of rewards, compresses their scale for learning."""
    return float(np.sign(reward) * np.log1p(abs(reward)))


def choose_plan(ctx: SearchContext, dqn: DuelingDQN, episode: int) -> tuple[dict[str, str], list[tuple[np.ndarray, int]]]:
    space = ctx.evaluator.space
    plan, steps = {}, []
    for position, layer in enumerate(space.layers):
        state = space.state(position)
        action = dqn.act(state, ctx.action_mask(plan, position), episode)
        plan[layer.name] = space.actions[action]
        steps.append((state, action))
    return plan, steps


def learn_from_episode(ctx: SearchContext, dqn: DuelingDQN, steps: list[tuple[np.ndarray, int]], value: float) -> None:
    space = ctx.evaluator.space
    for position, (state, action) in enumerate(steps):
        last = position == len(steps) - 1
        following = min(position + 1, len(steps) - 1)
        dqn.remember(Transition(state, action, value, space.state(following), space.mask(following), last))
    for _ in range(dqn.config.updates_per_episode):
        dqn.learn()


def pick_tau(ctx: SearchContext, ddpg: DDPG, plan: dict[str, str], human: bool) -> list[Candidate]:
    """One DDPG proposal, refined: refinement already searches every threshold, so more proposals add nothing."""
    if not human:
        return [ctx.score(plan, 0.0)]
    state = ctx.evaluator.space.encode(plan)
    candidate = ctx.score(plan, ddpg.act(state, explore=True), refine=True)
    if candidate.measured is not None:
        ddpg.remember(state, candidate.tau, squash(candidate.reward))
        ddpg.learn()
    return [candidate]


Proposal = tuple[dict[str, str], list[tuple[np.ndarray, int]]]


def screened(ctx: SearchContext, screener: Screener, proposals: list[Proposal]) -> list[Proposal]:
    """The distinct proposals that cost no fine-tune, then the best-screened one of those that do (if any)."""
    distinct = list({plan_key(plan): (plan, steps) for plan, steps in proposals}.values())
    free = [p for p in distinct if not ctx.costs_a_backbone(p[0])]
    paid = [p for p in distinct if ctx.costs_a_backbone(p[0])]
    if len(paid) <= 1:  # nothing to choose between: no rewrite to score
        return free + paid
    best = screener.best([plan for plan, _ in paid])
    return free + [next(p for p in paid if p[0] is best)]


def warm_proposals(ctx: SearchContext) -> list[Proposal]:
    """The plans rewriting the fewest layers within S_c and E_c on paper (`warm_start.py`), as DQN steps."""
    space = ctx.evaluator.space
    return [(plan, [(space.state(position), space.actions.index(plan[layer.name]))
                    for position, layer in enumerate(space.layers)])
            for plan in fewest_rewrites(ctx.paper_budget())]


def run_rl(ctx: SearchContext, seed: int, human: bool, screen: ScreenConfig | None = None,
           warm_start: bool = False) -> None:
    """Algorithm 1; with `screen`, several DQN proposals per episode and only the best-screened one fine-tuned;
    with `warm_start`, the first episode also fine-tunes the best screened plan rewriting the fewest layers."""
    space = ctx.evaluator.space
    dqn = DuelingDQN(4, len(space.actions), seed=seed)
    ddpg = DDPG(len(space.encode(space.identity_plan())), seed=seed + 7)
    screener = Screener(ctx.evaluator, screen) if screen is not None else None
    while True:
        episode = ctx.next_episode()
        proposals = [choose_plan(ctx, dqn, episode) for _ in range(screen.proposals if screen is not None else 1)]
        groups = [warm_proposals(ctx), proposals] if warm_start and episode == 1 else [proposals]
        for group in groups:  # screened apart: the best warm-start plan is fine-tuned whatever the DQN proposed
            for plan, steps in group if screener is None else screened(ctx, screener, group):
                best = max(pick_tau(ctx, ddpg, plan, human), key=lambda c: c.reward)
                learn_from_episode(ctx, dqn, steps, squash(best.reward))


@STRATEGIES.register("hgen")
def hgen(ctx: SearchContext, seed: int) -> None:
    run_rl(ctx, seed, human=True, screen=ScreenConfig(), warm_start=True)
