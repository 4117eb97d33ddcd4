"""H-Gen (paper Algorithm 1): per episode the dueling DQN picks an operator per layer, then DDPG picks tau.

A backbone costs seconds to fine-tune, a threshold microseconds, so each episode lets DDPG try `tau_steps`
thresholds on the same backbone (explore) plus its greedy one; the episode's reward, broadcast to every DQN step,
is the best of them. Violations score in the hundreds, so the agents learn from `squash(reward)`, a monotone
log compression: a clip would flatten every serious violation to one value and hide which way is better.
"""

from __future__ import annotations

import numpy as np

from hgen.compiler.search.context import Candidate, SearchContext
from hgen.compiler.search.ddpg import DDPG
from hgen.compiler.search.dqn import DuelingDQN, Transition
from hgen.compiler.search.strategies import STRATEGIES

TAU_STEPS = 6


def squash(reward: float) -> float:
    """sign(r) * log(1 + |r|): keeps the order of rewards, compresses their scale for learning."""
    return float(np.sign(reward) * np.log1p(abs(reward)))


def choose_plan(ctx: SearchContext, dqn: DuelingDQN, episode: int) -> tuple[dict[str, str], list[tuple[np.ndarray, int]]]:
    space = ctx.evaluator.space
    plan, steps = {}, []
    for position, layer in enumerate(space.layers):
        state = space.state(position)
        action = dqn.act(state, space.valid_mask(ctx.evaluator.base, plan, position), episode)
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
    if not human:
        return [ctx.score(plan, 0.0)]
    state = ctx.evaluator.space.encode(plan)
    scored = []
    for step in range(TAU_STEPS + 1):
        tau = ddpg.act(state, explore=step < TAU_STEPS)
        candidate = ctx.score(plan, tau)
        ddpg.remember(state, tau, squash(candidate.reward))
        ddpg.learn()
        scored.append(candidate)
    return scored


def run_rl(ctx: SearchContext, seed: int, human: bool) -> None:
    space = ctx.evaluator.space
    dqn = DuelingDQN(4, len(space.actions), seed=seed)
    ddpg = DDPG(len(space.encode(space.identity_plan())), seed=seed + 7)
    while True:
        episode = ctx.next_episode()
        plan, steps = choose_plan(ctx, dqn, episode)
        best = max(pick_tau(ctx, ddpg, plan, human), key=lambda c: c.reward)
        learn_from_episode(ctx, dqn, steps, squash(best.reward))


@STRATEGIES.register("hgen")
def hgen(ctx: SearchContext, seed: int) -> None:
    run_rl(ctx, seed, human=True)
