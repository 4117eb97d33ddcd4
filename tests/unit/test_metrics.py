"""S, E and MACs on a model small enough to check by hand, and A/T/L through the runtime gate."""

import numpy as np
import pytest

from hgen.compiler.errors import InvalidArgumentError, ModelCostError
from hgen.compiler.metrics import energy_mj, evaluate_hdnn, model_costs, storage_mb
from hgen.hub.crowd import SimulatedCrowd
from hgen.runtime.errors import InvalidInputError


@pytest.fixture(scope="module")
def tiny():
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((5, 5, 1)),
        layers.Conv2D(2, 3, name="conv"),        # out 3x3x2: MACs 3*3*2*3*3*1 = 162, weights 18 + 2
        layers.MaxPooling2D(1, name="pool"),     # 18 activations, no MACs
        layers.Flatten(name="flat"),             # a view: nothing
        layers.Dense(3, name="fc"),              # MACs 18*3 = 54, weights 54 + 3
    ])


def test_costs_by_hand(tiny):
    costs = model_costs(tiny)
    by_name = {row.name: row for row in costs.layers}
    assert (by_name["conv"].macs, by_name["conv"].weights, by_name["conv"].activations) == (162, 20, 18)
    assert (by_name["pool"].macs, by_name["pool"].activations) == (0, 18)
    assert by_name["flat"].activations == 0
    assert (by_name["fc"].macs, by_name["fc"].weights, by_name["fc"].activations) == (54, 57, 3)
    assert (costs.macs, costs.weights, costs.activations) == (216, 77, 25 + 18 + 18 + 3)
    assert costs.weights == tiny.count_params()


def test_storage_and_energy_by_hand(tiny):
    costs = model_costs(tiny)
    assert storage_mb(costs) == pytest.approx((77 * 32 + 64 * 32) / 8 / 1e6)
    assert storage_mb(costs, weight_bits=8, activation_bits=8) == pytest.approx((77 + 64) / 1e6)
    assert energy_mj(costs) == pytest.approx(52.8e-12 * (216 + 200 * 64 + 6 * 77) * 1e3)
    with pytest.raises(InvalidArgumentError):
        storage_mb(costs, weight_bits=0)


def test_lenet5_macs_match_the_textbook_count():
    from hgen.compiler.models import build_model

    costs = model_costs(build_model("lenet5", (28, 28, 1), 10))
    conv1 = 28 * 28 * 6 * 25
    conv2 = 10 * 10 * 16 * 25 * 6
    fc = 400 * 120 + 120 * 84 + 84 * 10
    assert costs.macs == conv1 + conv2 + fc
    assert costs.weights == 61706


def test_a_layer_with_weights_and_no_cost_model_is_an_error():
    import keras
    from keras import layers

    class Mystery(layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.w

    model = keras.Sequential([keras.Input((4,)), Mystery(name="odd")])
    with pytest.raises(ModelCostError, match="'odd' of type Mystery"):
        model_costs(model)


def synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    logits = rng.normal(0, 1, (n, 10))
    logits[np.arange(n), labels] += rng.uniform(0, 4, n)  # some confident, some not
    return logits, labels


def test_gate_extremes_and_labour():
    logits, labels = synthetic()
    answers = SimulatedCrowd.uniform(3, 1.0, 10, seed=0).annotate(labels, 3, hardness=np.full(len(labels), 0.5))
    none = evaluate_hdnn(logits, labels, answers, tau=0.0, temperature=1.0, t_infer_ms=2.0)
    assert none.gated == 0 and none.accuracy_fused == none.accuracy_model and none.labour == 0.0
    assert none.latency_ms == 2.0
    everything = evaluate_hdnn(logits, labels, answers, tau=1.0, temperature=1.0, t_infer_ms=2.0)
    assert everything.gated == len(labels) and everything.annotations == 3 * len(labels)
    assert everything.accuracy_fused > none.accuracy_model + 0.1  # perfect people fix what they see
    # d defaults to 1 + 2 * sigmoid(-2) operations per person when no estimator is fitted
    d = 1 + 2 / (1 + np.exp(2.0))
    assert everything.labour == pytest.approx(d * 3 / 12, rel=1e-6)
    assert everything.extra_latency_ms == pytest.approx(answers.sample_latency_s.mean() * 1000)
    assert everything.simulated


def test_share_to_people_grows_with_tau():
    logits, labels = synthetic(seed=1)
    answers = SimulatedCrowd.uniform(3, 0.9, 10, seed=1).annotate(labels, 3)
    shares = [evaluate_hdnn(logits, labels, answers, tau=t, temperature=1.0).share_to_people
              for t in (0.2, 0.4, 0.6, 0.8)]
    assert shares == sorted(shares) and shares[-1] > shares[0]
    with pytest.raises(InvalidInputError):
        evaluate_hdnn(logits, labels, answers, tau=2.0, temperature=1.0)
