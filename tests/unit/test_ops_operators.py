"""Each operator on LeNet-5 (Sequential) and a VGG-style block (Functional, strided/padded/dilated convs):
output shapes kept, parameters as documented, exact rewrites exact, sparse masks counted as stored."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.metrics import model_costs
from hgen.compiler.models import build_model
from hgen.compiler.ops import Plan, apply_plan, estimate_model, estimate_plan
from hgen.compiler.ops.testing import randomise, vgg_block_model

CONV_OPS = ["svd_conv", "depthwise_separable", "mlpconv", "fire", "sparse_random", "sparse_decompose"]
DENSE_OPS = ["svd_dense", "sparse_coding"]


@pytest.fixture(scope="module")
def lenet():
    return randomise(build_model("lenet5", (28, 28, 1), 10), seed=1, scale=0.2)


@pytest.fixture(scope="module")
def vgg():
    return randomise(vgg_block_model(), seed=2)


@pytest.fixture(scope="module")
def lenet_x():
    return np.random.default_rng(0).random((48, 28, 28, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def vgg_x():
    return np.random.default_rng(1).random((48, 16, 16, 3)).astype(np.float32)


def out(model, x):
    return np.asarray(model(x, training=False))


def layer_params(model, names):
    return sum(row.weights for row in model_costs(model).layers if any(row.name.startswith(n) for n in names))


# Full-rank / full-density configurations whose rewrite is mathematically exact.
EXACT = {
    "identity": {"operator": "identity"},
    "svd_conv": {"operator": "svd_conv", "ratio": 1.0},
    "depthwise_separable": {"operator": "depthwise_separable", "ratio": 1.0},
    "mlpconv": {"operator": "mlpconv", "ratio": 1.0},
    "sparse_decompose": {"operator": "sparse_decompose", "ratio": 1.0, "options": {"bases": 1.0, "refit": False}},
    "sparse_random": {"operator": "sparse_random", "ratio": 1.0, "options": {"refit": False}},
}
EXACT_DENSE = {
    "identity": {"operator": "identity"},
    "svd_dense": {"operator": "svd_dense", "ratio": 1.0},
    "sparse_coding": {"operator": "sparse_coding", "ratio": 1.0, "options": {"density": 1.0, "refit": False}},
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_conv_rewrites_reproduce_the_model(name, vgg, vgg_x):
    convs = ["b1_conv2", "b2_conv1", "b2_conv2", "b2_conv3"]  # same, strided, valid, dilated
    new = apply_plan(vgg, Plan.of({c: EXACT[name] for c in convs}))
    np.testing.assert_allclose(out(new, vgg_x), out(vgg, vgg_x), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("name", sorted(EXACT_DENSE))
def test_exact_dense_rewrites_reproduce_the_model(name, lenet, lenet_x):
    new = apply_plan(lenet, Plan.of({"fc2": EXACT_DENSE[name], "logits": EXACT_DENSE[name]}))
    np.testing.assert_allclose(out(new, lenet_x), out(lenet, lenet_x), rtol=1e-4, atol=2e-4)


def test_truncated_svd_is_not_exact_but_close(lenet, lenet_x):
    """Guards the exactness tests: a truncated rank must change the output (the test could fail)."""
    new = apply_plan(lenet, Plan.of({"conv2": ("svd_conv", 0.25)}))
    assert np.abs(out(new, lenet_x) - out(lenet, lenet_x)).max() > 1e-3


@pytest.mark.parametrize("name", CONV_OPS)
def test_conv_operators_keep_shapes_on_strided_padded_dilated_convs(name, vgg, vgg_x):
    convs = ["b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2", "b2_conv3"]
    new = apply_plan(vgg, Plan.of({c: name for c in convs}), vgg_x)
    for conv in convs:
        last = [layer for layer in new.layers if layer.name.startswith(conv)][-1]
        assert tuple(last.output.shape) == tuple(vgg.get_layer(conv).output.shape), conv
    assert out(new, vgg_x).shape == (48, 10)


# Stored parameters of LeNet-5's conv2 (5x5, 6 -> 16) and fc1 (400 -> 120) at each operator's default, by hand.
DOCUMENTED = {
    "svd_conv": ("conv2", 2416, 25 * 6 * 8 + 8 * 16 + 16),  # r = ceil(0.5 * 16)
    "depthwise_separable": ("conv2", 2416, 25 * 6 * 1 + 6 * 16 + 16),  # m = 1
    "mlpconv": ("conv2", 2416, 8 * (150 + 1) + 8 * 16 + 16),  # r = 4, hidden 2r
    "fire": ("conv2", 2416, (6 * 4 + 4) + (4 * 8 + 8) + (25 * 4 * 8 + 8)),  # s = 4, e1 = e3 = 8
    "sparse_random": ("conv2", 2416, 25 * 3 * 16 + 16),  # 3 of 6 input channels per output
    "sparse_decompose": ("conv2", 2416, 25 * 6 * 4 + 6 * 16 + 16),  # m = 4, keep 6 of 24 per output
    "svd_dense": ("fc1", 48120, 30 * (400 + 120) + 120),  # r = ceil(0.25 * 120)
    "sparse_coding": ("fc1", 48120, 400 * 60 + 15 * 120 + 120),  # k = 60 atoms, 15 codes per column
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_parameters_reduced_as_documented(name, lenet, lenet_x):
    layer, before, after = DOCUMENTED[name]
    plan = Plan.of({layer: name})
    estimate = estimate_plan(lenet, plan)
    assert estimate.params == estimate_model(lenet).params - before + after
    new = apply_plan(lenet, plan, lenet_x)
    assert model_costs(new).weights == estimate.params  # the estimate (no fitting) matches the applied model
    assert layer_params(new, [layer]) == after < before


def test_gap_replaces_the_fc_stack(lenet, lenet_x):
    plan = Plan.of({"logits": "gap"})
    new = apply_plan(lenet, plan, lenet_x)
    kinds = [type(layer).__name__ for layer in new.layers]
    assert "Flatten" not in kinds and kinds[-2:] == ["GlobalAveragePooling2D", "Dense"]
    assert estimate_plan(lenet, plan).params == model_costs(lenet).weights - (48120 + 10164 + 850) + 16 * 10 + 10
    assert out(new, lenet_x).shape == (48, 10)


def test_gap_fit_is_least_squares_optimal_on_calibration(lenet, lenet_x):
    """The refitted classifier must beat any other linear map of the pooled features, e.g. a perturbed one."""
    new = apply_plan(lenet, Plan.of({"logits": "gap"}), lenet_x)
    target = out(lenet, lenet_x)
    error = np.mean((out(new, lenet_x) - target) ** 2)
    dense = new.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 1.05, bias])
    assert error < np.mean((out(new, lenet_x) - target) ** 2)


@pytest.mark.parametrize("plan", [{"conv2": "sparse_random"}, {"conv2": "sparse_decompose"},
                                  {"fc1": "sparse_coding"}])
def test_sparse_layers_store_only_nonzeros(plan, lenet, lenet_x):
    new = apply_plan(lenet, Plan.of(plan), lenet_x)
    masked = [layer for layer in new.layers if type(layer).__name__.startswith("Masked")]
    assert len(masked) == 1
    layer = masked[0]
    mask = np.asarray(layer.sparsity_mask)
    effective = np.asarray(layer.kernel) * mask
    assert 0 < np.count_nonzero(mask) < mask.size
    assert np.count_nonzero(effective) <= np.count_nonzero(mask)
    row = next(r for r in model_costs(new).layers if r.name == layer.name)
    bias = layer.get_weights()[1].size
    assert row.weights == np.count_nonzero(mask) + bias


def mse(model, reference, x):
    return float(np.mean((out(model, x) - out(reference, x)) ** 2))


@pytest.mark.parametrize("name", ["sparse_random", "sparse_decompose"])
def test_least_squares_refit_beats_no_refit(name, lenet, lenet_x):
    errors = [mse(apply_plan(lenet, Plan.of({"conv2": {"operator": name, "options": {"refit": refit}}}), lenet_x),
                  lenet, lenet_x) for refit in (False, True)]
    assert errors[1] < errors[0]


def test_sparse_coding_refit_beats_no_refit(lenet, lenet_x):
    errors = [mse(apply_plan(lenet, Plan.of({"fc2": {"operator": "sparse_coding", "options": {"refit": refit}}}),
                             lenet_x), lenet, lenet_x) for refit in (False, True)]
    assert errors[1] < errors[0]


def test_fire_fit_beats_an_unfitted_fire(lenet, lenet_x):
    fitted = apply_plan(lenet, Plan.of({"conv2": "fire"}), lenet_x)
    error = mse(fitted, lenet, lenet_x)
    for name in ("conv2_expand_1x1", "conv2_expand_kxk"):
        layer = fitted.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 0.9, bias])
    assert error < mse(fitted, lenet, lenet_x)


def test_input_model_is_not_mutated(lenet, lenet_x):
    before = [w.copy() for w in lenet.get_weights()]
    names = [layer.name for layer in lenet.layers]
    new = apply_plan(lenet, Plan.of({"conv1": "fire", "conv2": "svd_conv", "logits": "gap"}), lenet_x)
    new.layers[1].set_weights([np.zeros_like(w) for w in new.layers[1].get_weights()])
    assert [layer.name for layer in lenet.layers] == names
    assert all(np.array_equal(a, b) for a, b in zip(before, lenet.get_weights()))
    assert not {id(w) for w in new.weights} & {id(w) for w in lenet.weights}


def test_apply_plan_needs_no_calibration_for_factorising_operators(lenet, lenet_x):
    """These operators need no calibration data. (No wall-clock bound: tests assert behaviour, not timing.)"""
    new = apply_plan(lenet, Plan.of({"conv1": "depthwise_separable", "conv2": "svd_conv", "fc1": "svd_dense"}))
    assert out(new, lenet_x[:4]).shape == out(lenet, lenet_x[:4]).shape


def test_compressed_models_can_be_rewritten_and_estimated_again(lenet, lenet_x):
    """Masks are weights: cloning a masked layer (estimate or a second plan) keeps its stored size."""
    sparse = apply_plan(lenet, Plan.of({"conv2": "sparse_random"}), lenet_x)
    assert estimate_plan(sparse, Plan()) == estimate_model(sparse)
    again = apply_plan(sparse, Plan.of({"fc1": ("svd_dense", 1.0)}))
    np.testing.assert_allclose(out(again, lenet_x), out(sparse, lenet_x), rtol=1e-4, atol=2e-4)


def test_mlpconv_starts_as_the_rank_r_svd_truncation(vgg, vgg_x):
    """The +/- split makes the ReLU micro-network reproduce svd_conv at the same rank, as documented."""
    plan = {"b1_conv2": ("mlpconv", 0.25), "b2_conv2": ("mlpconv", 0.25)}
    svd = {name: ("svd_conv", ratio) for name, (_, ratio) in plan.items()}
    np.testing.assert_allclose(out(apply_plan(vgg, Plan.of(plan)), vgg_x), out(apply_plan(vgg, Plan.of(svd)), vgg_x),
                               rtol=1e-4, atol=2e-4)
