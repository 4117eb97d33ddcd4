"""Plans, the validator (typed errors, all problems at once), operator lookup, policies and cost estimates."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from hgen.compiler.models import build_model
from hgen.compiler.ops import (OPERATORS, LayerChoice, OperatorError, Plan, PlanError, RewriteError, apply_plan,
                               estimate_model, estimate_plan, every_layer, explicit, first_convs_of_blocks,
                               operator_effect, operators_for, resolve_operator, skip_first_conv_per_block,
                               validate_plan)
from hgen.compiler.ops.graph import GraphView
from hgen.compiler.ops.testing import vgg_block_model


@pytest.fixture(scope="module")
def lenet():
    return build_model("lenet5", (28, 28, 1), 10)


@pytest.fixture(scope="module")
def vgg():
    return vgg_block_model()


def test_registry_holds_the_papers_nine_operators_plus_identity_and_hgens_own():
    ids = {OPERATORS.get(name).paper_id: name for name in OPERATORS.names() if OPERATORS.get(name).paper_id != "-"}
    assert set(ids) == {"o_c1", "o_c2", "o_c3", "o_c4", "o_c5", "o_c6", "o_f1", "o_f2", "o_f3"}
    assert {name for name in OPERATORS.names() if OPERATORS.get(name).paper_id == "-"} == {"identity", "stem_stride"}
    assert ids["o_c6"] == "svd_conv" and ids["o_f2"] == "svd_dense"


def test_plan_round_trips_through_json_and_dict():
    plan = Plan.of({"conv1": ("svd_conv", 0.5), "fc1": {"operator": "sparse_coding", "options": {"density": 0.1}},
                    "logits": "gap"})
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_dict(plan.to_dict()) == plan
    assert plan.layers["conv1"] == LayerChoice(operator="svd_conv", ratio=0.5)


def test_plan_rejects_bad_ratio_and_unknown_keys_by_path():
    with pytest.raises(PlanError) as info:
        Plan.from_dict({"layers": {"conv1": {"operator": "svd_conv", "ratio": 1.5, "rank": 3}}})
    text = str(info.value)
    assert "layers.conv1.ratio" in text and "layers.conv1.rank: unknown key" in text
    with pytest.raises(PlanError):
        Plan.from_json("[1, 2]")


def test_merge_refuses_conflicting_choices():
    merged = Plan.of({"conv1": "fire"}).merge(Plan.of({"logits": "gap"}))
    assert set(merged.layers) == {"conv1", "logits"}
    with pytest.raises(PlanError, match="conv1"):
        merged.merge(Plan.of({"conv1": "mlpconv"}))


def test_validator_lists_every_problem_at_once(lenet):
    plan = Plan.of({
        "conv9": "svd_conv",  # no such layer
        "fc1": "svd_conv",  # wrong layer type
        "conv1": "no_such_operator",  # unknown operator
        "conv2": {"operator": "svd_conv", "options": {"rank": 99}},  # rank larger than the layer
        "fc2": {"operator": "svd_dense", "options": {"bogus": 1}},  # unknown config key
        "logits": "gap",
    })
    with pytest.raises(PlanError) as info:
        validate_plan(lenet, plan)
    problems = info.value.problems
    assert len(problems) == 7, problems  # gap on logits also conflicts with the choices on fc1 and fc2
    joined = "\n".join(problems)
    for fragment in ["'conv9' is not in model", "applies to Conv2D layers, not Dense", "no_such_operator",
                     "rank 99 is outside 1..16", "bogus", "conflicts with 'gap' on 'logits'"]:
        assert fragment in joined


def test_operator_errors_are_typed_and_name_layer_and_operator(lenet):
    graph = GraphView.of(lenet)
    svd = OPERATORS.get("svd_conv")
    with pytest.raises(OperatorError) as info:
        svd.check(lenet.get_layer("conv2"), svd.config(None, {"rank": 17}), graph)
    assert (info.value.layer, info.value.operator) == ("conv2", "svd_conv")
    with pytest.raises(OperatorError, match="Dense layers, not Conv2D"):
        OPERATORS.get("svd_dense").check(lenet.get_layer("conv1"), OPERATORS.get("svd_dense").config(), graph)
    sparse = OPERATORS.get("sparse_random")
    with pytest.raises(OperatorError, match="1 input channel"):
        sparse.check(lenet.get_layer("conv1"), sparse.config(), graph)

def test_gap_needs_a_flatten_dense_stack():
    image = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, name="c")(image)
    x = keras.layers.GlobalAveragePooling2D(name="p")(x)
    model = keras.Model(image, keras.layers.Dense(2, name="out")(x))
    with pytest.raises(PlanError, match="needs a Flatten -> Dense stack before it, found GlobalAveragePooling2D"):
        validate_plan(model, Plan.of({"out": "gap"}))


@pytest.mark.parametrize("name", ["svd_conv", "depthwise_separable", "mlpconv", "fire", "sparse_random",
                                  "sparse_decompose"])
def test_grouped_convs_are_rejected_by_every_conv_operator(name):
    image = keras.Input((8, 8, 4))
    model = keras.Model(image, keras.layers.Conv2D(4, 3, groups=2, name="grouped")(image))
    with pytest.raises(PlanError, match="grouped convolution"):
        validate_plan(model, Plan.of({"grouped": name}))


def test_operators_for_lists_valid_names_including_identity(lenet):
    assert operators_for(lenet.get_layer("conv2")) == ["identity", "depthwise_separable", "fire", "mlpconv",
                                                        "sparse_decompose", "sparse_random", "stem_stride",
                                                        "svd_conv"]  # by layer type only
    assert "stem_stride" not in operators_for(lenet.get_layer("conv1"), lenet)  # a Flatten -> Dense follows
    assert "sparse_random" not in operators_for(lenet.get_layer("conv1"), lenet)  # one input channel
    assert operators_for(lenet.get_layer("logits"), lenet) == ["identity", "gap", "sparse_coding", "svd_dense"]
    assert operators_for(lenet.get_layer("pool1")) == ["identity"]


def test_svd_family_resolves_by_layer_type(lenet):
    assert resolve_operator("svd", lenet.get_layer("conv1")) == "svd_conv"
    assert resolve_operator("svd", lenet.get_layer("fc1")) == "svd_dense"
    assert resolve_operator("svd", lenet.get_layer("pool1")) is None
    plan = every_layer(lenet, "svd", ratio=0.5)
    assert {n: c.operator for n, c in plan.layers.items()} == {
        "conv1": "svd_conv", "conv2": "svd_conv", "fc1": "svd_dense", "fc2": "svd_dense", "logits": "svd_dense"}


def test_every_layer_skips_layers_the_operator_rejects(lenet):
    assert set(every_layer(lenet, "sparse_random").layers) == {"conv2"}
    assert set(every_layer(lenet, "svd_dense", only=["logits"]).layers) == {"logits"}


def test_skip_first_conv_per_block(vgg, lenet):
    assert first_convs_of_blocks(GraphView.of(vgg)) == {"b1_conv1", "b2_conv1"}
    plan = skip_first_conv_per_block(vgg, "svd_conv")
    assert set(plan.layers) == {"b1_conv2", "b2_conv2", "b2_conv3"}
    assert skip_first_conv_per_block(lenet, "svd_conv").layers == {}  # LeNet: one conv per block


def test_explicit_policy_accepts_both_forms():
    assert explicit({"conv1": "fire"}) == explicit({"layers": {"conv1": {"operator": "fire"}}})


def test_identity_rejects_a_ratio(lenet):
    with pytest.raises(PlanError, match="identity"):
        validate_plan(lenet, Plan.of({"conv1": ("identity", 0.5)}))


def test_estimate_reports_effects_without_fitting(lenet):
    baseline = estimate_model(lenet)
    assert baseline.params == 61706
    plan = Plan.of({"conv2": "fire", "fc1": "sparse_coding", "logits": "svd_dense"})
    effect = estimate_plan(lenet, plan)  # no calibration data: nothing is fitted
    delta = operator_effect(lenet, plan)
    assert delta.params == effect.params - baseline.params < 0
    assert effect.storage_mb < baseline.storage_mb and effect.energy_mj != baseline.energy_mj
    assert effect.macs < baseline.macs


def test_fitting_operators_ask_for_calibration_data(lenet):
    with pytest.raises(PlanError, match="calibration_x"):
        apply_plan(lenet, Plan.of({"logits": "gap"}))


def test_subclassed_and_shapeless_models_are_rejected():
    class Tiny(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(RewriteError, match="subclassed"):
        validate_plan(Tiny(), Plan())
    with pytest.raises(RewriteError, match="no input shape"):
        validate_plan(keras.Sequential([keras.layers.Dense(2)]), Plan())


def test_functional_and_sequential_give_the_same_rewrite(lenet):
    functional = keras.Model(lenet.inputs, lenet.outputs)
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype(np.float32)
    plan = Plan.of({"conv2": ("svd_conv", 0.5), "fc1": "svd_dense"})
    a, b = apply_plan(lenet, plan), apply_plan(functional, plan)
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-6)
