"""Stage one: a dueling DQN (Wang et al. 2016) that picks a compression operator per layer, layer by layer.

Q(s, a) = V(s) + A(s, a) - mean_a A(s, a). Invalid actions for a layer (a conv operator on a dense layer) are masked
out of both the epsilon-greedy choice and the bootstrap max. The paper's small discount (0.01) makes each layer's
choice mostly answer to the episode reward, which is broadcast to every step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from hgen.compiler.search.nets import MLP


@dataclass(frozen=True)
class DQNConfig:
    hidden: int = 64
    learning_rate: float = 1e-3
    discount: float = 0.01
    batch_size: int = 32
    memory: int = 2000
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    epsilon_decay_episodes: int = 20
    target_update_every: int = 20
    updates_per_episode: int = 8


@dataclass(frozen=True)
class Transition:
    state: np.ndarray
    action: int
    reward: float
    next_state: np.ndarray
    next_mask: np.ndarray
    done: bool


class DuelingDQN:
    """Shared trunk, then a value head and an advantage head (kept as one MLP per head for clarity)."""

    def __init__(self, state_size: int, actions: int, config: DQNConfig = DQNConfig(), seed: int = 0) -> None:
        self.config = config
        self.actions = actions
        self.trunk = MLP((state_size, config.hidden, config.hidden), config.learning_rate, seed)
        self.value = MLP((config.hidden, 1), config.learning_rate, seed + 1)
        self.advantage = MLP((config.hidden, actions), config.learning_rate, seed + 2)
        self.target = self._clone()
        self.memory: deque[Transition] = deque(maxlen=config.memory)
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    def _clone(self) -> tuple[MLP, MLP, MLP]:
        return self.trunk.copy(), self.value.copy(), self.advantage.copy()

    @staticmethod
    def _q(nets: tuple[MLP, MLP, MLP], states: np.ndarray) -> np.ndarray:
        trunk, value, advantage = nets
        h = np.maximum(trunk.forward(states), 0.0)
        adv = advantage.forward(h)
        return value.forward(h) + adv - adv.mean(axis=1, keepdims=True)

    def q_values(self, state: np.ndarray) -> np.ndarray:
        return self._q((self.trunk, self.value, self.advantage), state[None])[0]

    def epsilon(self, episode: int) -> float:
        c = self.config
        fraction = min(1.0, episode / max(1, c.epsilon_decay_episodes))
        return c.epsilon_start + fraction * (c.epsilon_end - c.epsilon_start)

    def act(self, state: np.ndarray, mask: np.ndarray, episode: int, greedy: bool = False) -> int:
        valid = np.flatnonzero(mask)
        if not greedy and self.rng.random() < self.epsilon(episode):
            return int(self.rng.choice(valid))
        q = self.q_values(state)
        return int(valid[np.argmax(q[valid])])

    def remember(self, transition: Transition) -> None:
        self.memory.append(transition)

    def learn(self) -> float | None:
        """One minibatch update; returns the TD loss, or None while memory is too small."""
        if len(self.memory) < self.config.batch_size:
            return None
        picks = self.rng.choice(len(self.memory), self.config.batch_size, replace=False)
        batch = [self.memory[i] for i in picks]
        states = np.stack([t.state for t in batch])
        next_states = np.stack([t.next_state for t in batch])
        masks = np.stack([t.next_mask for t in batch])
        next_q = np.where(masks, self._q(self.target, next_states), -np.inf).max(axis=1)
        next_q = np.where([t.done for t in batch], 0.0, np.nan_to_num(next_q, neginf=0.0))
        targets = np.array([t.reward for t in batch]) + self.config.discount * next_q
        return self._fit(states, np.array([t.action for t in batch]), targets)

    def _fit(self, states: np.ndarray, actions: np.ndarray, targets: np.ndarray) -> float:
        trunk, value, advantage = self.trunk, self.value, self.advantage
        pre = trunk.forward(states)
        h = np.maximum(pre, 0.0)
        adv = advantage.forward(h)
        q = value.forward(h) + adv - adv.mean(axis=1, keepdims=True)
        rows = np.arange(len(actions))
        error = q[rows, actions] - targets
        grad_q = np.zeros_like(q)
        grad_q[rows, actions] = 2.0 * error / len(actions)
        grad_adv = grad_q - grad_q.mean(axis=1, keepdims=True)
        grad_h = value.backward(grad_q.sum(axis=1, keepdims=True)) + advantage.backward(grad_adv)
        trunk.backward(grad_h * (pre > 0))
        self.updates += 1
        if self.updates % self.config.target_update_every == 0:
            self.target = self._clone()
        return float(np.mean(error**2))
