"""Stage two: DDPG (Lillicrap et al. 2016) picks the human threshold tau in [0, 1] for a compressed backbone.

State: the encoded plan. Actor mu(s) -> sigmoid -> tau; exploration adds truncated normal noise that decays.
Critic target (paper Eq. 17): y = r + gamma * Q'(s', mu'(s')); loss (Eq. 18): mean (y - Q(s, a))^2.
Choosing tau is a one-step decision per backbone, so s' = s and gamma is small.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from hgen.compiler.search.nets import MLP


@dataclass(frozen=True)
class DDPGConfig:
    hidden: int = 64
    actor_lr: float = 1e-3
    critic_lr: float = 2e-3
    discount: float = 0.01
    batch_size: int = 32
    memory: int = 2000
    noise_start: float = 0.3
    noise_end: float = 0.05
    noise_decay_steps: int = 200
    soft_update: float = 0.05


def truncated_normal(rng: np.random.Generator, mean: float, sigma: float, low: float = 0.0,
                     high: float = 1.0) -> float:
    """Rejection-sample N(mean, sigma) inside [low, high] (falls back to clipping after 100 tries)."""
    for _ in range(100):
        value = rng.normal(mean, sigma)
        if low <= value <= high:
            return float(value)
    return float(np.clip(mean, low, high))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class DDPG:
    """Actor and critic with target copies and a replay memory."""

    def __init__(self, state_size: int, config: DDPGConfig = DDPGConfig(), seed: int = 0) -> None:
        self.config = config
        self.actor = MLP((state_size, config.hidden, 1), config.actor_lr, seed)
        self.critic = MLP((state_size + 1, config.hidden, config.hidden, 1), config.critic_lr, seed + 1)
        self.actor_target, self.critic_target = self.actor.copy(), self.critic.copy()
        self.memory: deque[tuple[np.ndarray, float, float]] = deque(maxlen=config.memory)
        self.rng = np.random.default_rng(seed)
        self.steps = 0

    def policy(self, state: np.ndarray) -> float:
        return float(_sigmoid(self.actor.forward(state[None]))[0, 0])

    def noise(self) -> float:
        c = self.config
        fraction = min(1.0, self.steps / max(1, c.noise_decay_steps))
        return c.noise_start + fraction * (c.noise_end - c.noise_start)

    def act(self, state: np.ndarray, explore: bool = True) -> float:
        tau = self.policy(state)
        self.steps += 1
        return truncated_normal(self.rng, tau, self.noise()) if explore else tau

    def remember(self, state: np.ndarray, tau: float, reward: float) -> None:
        self.memory.append((state, tau, reward))

    def learn(self) -> float | None:
        if len(self.memory) < self.config.batch_size:
            return None
        picks = self.rng.choice(len(self.memory), self.config.batch_size, replace=False)
        states = np.stack([self.memory[i][0] for i in picks])
        taus = np.array([[self.memory[i][1]] for i in picks])
        rewards = np.array([[self.memory[i][2]] for i in picks])
        next_tau = _sigmoid(self.actor_target.forward(states))
        y = rewards + self.config.discount * self.critic_target.forward(np.hstack([states, next_tau]))  # Eq. 17
        q = self.critic.forward(np.hstack([states, taus]))
        loss = float(np.mean((y - q) ** 2))  # Eq. 18
        self.critic.backward(2.0 * (q - y) / len(q))
        self._update_actor(states)
        self.actor_target.soft_update(self.actor, self.config.soft_update)
        self.critic_target.soft_update(self.critic, self.config.soft_update)
        return loss

    def _update_actor(self, states: np.ndarray) -> None:
        """Ascend Q(s, mu(s)): backprop -dQ/da through the critic (no update) into the actor."""
        logits = self.actor.forward(states)
        tau = _sigmoid(logits)
        self.critic.forward(np.hstack([states, tau]))
        grad_input = self.critic.backward(-np.ones((len(states), 1)) / len(states), update=False)
        grad_tau = grad_input[:, -1:]
        self.actor.backward(grad_tau * tau * (1.0 - tau))
