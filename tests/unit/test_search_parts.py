"""The search's pieces on their own: reward shape, coefficients, numpy nets, DQN and DDPG on toy problems."""

import math

import numpy as np
import pytest

from hgen.compiler.errors import UnknownNameError
from hgen.compiler.search.ddpg import DDPG, DDPGConfig, truncated_normal
from hgen.compiler.search.devices import DEVICES, get_device
from hgen.compiler.search.dqn import DQNConfig, DuelingDQN, Transition
from hgen.compiler.search.nets import MLP
from hgen.compiler.search.objective import (EPS, Demands, Measured, coefficients, reward, safe_log, violations)
from hgen.compiler.search.strategies import strategy_names


def test_coefficients_follow_the_appendix():
    demands = Demands(labour=0.03)
    phone = coefficients(demands, get_device("phone").battery_mah)
    assert phone.d5 == pytest.approx(0.7)
    assert phone.d4 == pytest.approx(0.5 * 0.3)  # (3800 - 3400) / 3800 < 0.5, so 0.5
    watch = coefficients(demands, get_device("watch").battery_mah)
    assert watch.d4 == pytest.approx((3800 - 1000) / 3800 * 0.3)
    for c in (phone, watch):
        assert c.d3 + c.d4 + c.d5 == pytest.approx(1.0)


def test_safe_log_is_log_above_eps_and_ranks_violations():
    assert safe_log(0.5) == pytest.approx(math.log(0.5))
    assert safe_log(EPS) == pytest.approx(math.log(EPS))
    values = [safe_log(x) for x in (0.2, 0.01, EPS, 0.0, -0.01, -0.1, -1.0)]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)


def test_reward_prefers_slightly_violated_to_badly_violated():
    demands = Demands(accuracy=0.85, latency_ms=30, storage_mb=2, energy_mj=3, labour=0.03)
    coef = coefficients(demands, 3800)
    feasible = Measured(0.90, 10, 1, 1, 0.01)
    slightly = Measured(0.849, 10, 1, 1, 0.01)
    badly = Measured(0.60, 10, 1, 1, 0.01)
    over_budget = Measured(0.90, 10, 1, 1, 0.04)
    totals = [sum(reward(m, demands, coef)) for m in (feasible, slightly, badly)]
    assert totals[0] > totals[1] > totals[2]
    assert sum(reward(over_budget, demands, coef)) < totals[0]
    assert violations(feasible, demands) == []
    assert violations(over_budget, demands) == ["labour 0.0400 > 0.03"]
    assert len(violations(Measured(0.5, 99, 9, 9, 0.09), demands)) == 5


def test_devices_and_strategies_are_registered_by_name():
    assert {"watch", "phone", "rpi4", "host"} <= set(DEVICES.names())
    assert get_device("rpi4").target == "rpi4" and not get_device("rpi4").measured
    assert {"hgen", "adadeep", "random", "optuna"} <= set(strategy_names())
    with pytest.raises(UnknownNameError, match="valid choices: host, phone, rpi4, watch"):
        get_device("toaster")


def test_mlp_gradients_match_finite_differences():
    net = MLP((3, 5, 2), seed=0)
    x = np.random.default_rng(0).normal(size=(4, 3))
    grad_out = np.random.default_rng(1).normal(size=(4, 2))
    net.forward(x)
    analytic = net.backward(grad_out, update=False)
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        bumped = x.copy()
        bumped[i] += 1e-6
        numeric[i] = ((net.forward(bumped) - net.forward(x)) * grad_out).sum() / 1e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


def test_dueling_dqn_learns_the_best_valid_action():
    """A contextual bandit: in state 0 action 2 pays, in state 1 action 0 pays; action 1 is masked in state 1."""
    states = [np.array([0.0, 1.0, 0.0, 0.0]), np.array([1.0, 0.0, 1.0, 1.0])]
    masks = [np.array([True, True, True]), np.array([True, False, True])]
    pay = [np.array([0.0, 0.3, 1.0]), np.array([1.0, 5.0, 0.2])]
    dqn = DuelingDQN(4, 3, DQNConfig(epsilon_decay_episodes=50, target_update_every=10), seed=0)
    rng = np.random.default_rng(0)
    for episode in range(300):
        s = int(rng.integers(2))
        a = dqn.act(states[s], masks[s], episode)
        assert masks[s][a]
        dqn.remember(Transition(states[s], a, float(pay[s][a]), states[s], masks[s], True))
        dqn.learn()
    assert dqn.act(states[0], masks[0], 10**6, greedy=True) == 2
    assert dqn.act(states[1], masks[1], 10**6, greedy=True) == 0  # 1 pays more but is not allowed


def test_ddpg_finds_the_best_threshold():
    """Reward peaks at tau = 0.7: the actor should move there."""
    agent = DDPG(3, DDPGConfig(noise_decay_steps=150), seed=0)
    state = np.array([1.0, 0.0, 1.0])
    for _ in range(600):
        tau = agent.act(state)
        agent.remember(state, tau, -((tau - 0.7) ** 2) * 10)
        agent.learn()
    assert agent.act(state, explore=False) == pytest.approx(0.7, abs=0.08)


def test_truncated_normal_stays_inside():
    rng = np.random.default_rng(0)
    draws = [truncated_normal(rng, 0.95, 0.3) for _ in range(500)]
    assert min(draws) >= 0.0 and max(draws) <= 1.0


def test_learning_rewards_keep_their_order_without_flattening_violations():
    from hgen.compiler.search.strategies.hgen import squash

    rewards = [2.0, -1.0, -18.0, -240.0, -1000.0]
    squashed = [squash(r) for r in rewards]
    assert squashed == sorted(squashed, reverse=True) and len(set(squashed)) == len(squashed)
    assert squashed[-1] > -8  # -1000 becomes about -6.9: learnable, still the worst
