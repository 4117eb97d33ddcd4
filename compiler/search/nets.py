"""A small numpy MLP with Adam: enough for the search's DQN and DDPG, fast on 2 cores, seeded, no TF overhead.

The search's networks are tiny (a handful of inputs, 64 hidden units) while each candidate evaluation costs
seconds of fine-tuning, so clarity and determinism matter more than a framework here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Adam:
    """Adam state for one parameter array."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    m: np.ndarray | None = None
    v: np.ndarray | None = None
    t: int = 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> None:
        if self.m is None:
            self.m, self.v = np.zeros_like(param), np.zeros_like(param)
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclass
class MLP:
    """Dense layers with ReLU between them and a linear output; `backward` also returns d(loss)/d(input)."""

    sizes: tuple[int, ...]
    lr: float = 1e-3
    seed: int = 0
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)
    _optim: list[Adam] = field(default_factory=list)
    _cache: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.weights:
            rng = np.random.default_rng(self.seed)
            for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
                self.weights.append(rng.normal(0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)))
                self.biases.append(np.zeros(fan_out))
        self._optim = [Adam(self.lr) for _ in range(2 * len(self.weights))]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._cache = [x]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = x @ w + b
            if i < len(self.weights) - 1:
                x = np.maximum(x, 0.0)
            self._cache.append(x)
        return x

    def backward(self, grad_out: np.ndarray, update: bool = True) -> np.ndarray:
        """Backpropagate d(loss)/d(output) from the last `forward`; apply Adam when `update`."""
        grad = grad_out
        grads: list[tuple[np.ndarray, np.ndarray]] = []
        for i in reversed(range(len(self.weights))):
            if i < len(self.weights) - 1:
                grad = grad * (self._cache[i + 1] > 0)
            grads.append((self._cache[i].T @ grad, grad.sum(axis=0)))
            grad = grad @ self.weights[i].T
        if update:
            for i, (gw, gb) in zip(reversed(range(len(self.weights))), grads):
                self._optim[2 * i].step(self.weights[i], gw)
                self._optim[2 * i + 1].step(self.biases[i], gb)
        return grad

    def copy(self) -> MLP:
        return MLP(self.sizes, self.lr, self.seed, [w.copy() for w in self.weights], [b.copy() for b in self.biases])

    def soft_update(self, source: MLP, rate: float) -> None:
        """Polyak averaging towards `source` (target networks)."""
        for mine, theirs in zip(self.weights + self.biases, source.weights + source.biases):
            mine *= 1.0 - rate
            mine += rate * theirs
