"""A functional backbone with residual adds, BatchNorm, depthwise convs, ReLU6 and global pooling (the zoo's
`mobilenet_v2`, alpha 0.35 at 32x32x3, random weights) through the compile pipeline's pieces: cost model,
operators, calibration, LiteRT float lowering; plus transfer learning's two phases."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.metrics import model_costs
from hgen.compiler.models import build_model, load_model_file
from hgen.compiler.ops import (Plan, PlanError, apply_plan, estimate_model, estimate_plan, first_convs_of_blocks,
                               operators_for)
from hgen.compiler.ops.graph import GraphView
from hgen.compiler.ops.testing import calibrate_batchnorm

SHAPE, CLASSES = (32, 32, 3), 4
PLAN = {"block_2_project": ("svd_conv", 0.5), "block_2_expand": "depthwise_separable", "block_4_expand": "fire",
        "logits": ("svd_dense", 0.25)}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def mobilenet():
    import keras

    keras.utils.set_random_seed(0)
    return calibrate_batchnorm(build_model("mobilenet_v2", SHAPE, CLASSES, {"alpha": 0.35}), images(32, 0))


@pytest.fixture(scope="module")
def rewritten(mobilenet):
    return apply_plan(mobilenet, Plan.of(PLAN), images(32, 1))


def test_cost_model_gives_s_and_e_for_every_layer(mobilenet):
    costs = model_costs(mobilenet)
    assert len(costs.layers) == len(mobilenet.layers)
    effect = estimate_model(mobilenet)
    assert effect.storage_mb > 0 and effect.energy_mj > 0 and effect.macs > 1e6
    depthwise = [row for row in costs.layers if row.kind == "DepthwiseConv2D"]
    assert len(depthwise) == 17 and all(row.macs > 0 and row.weights > 0 for row in depthwise)


def test_operators_apply_inside_residual_blocks_and_keep_shapes(mobilenet, rewritten):
    assert {"svd_conv", "fire", "depthwise_separable"} <= set(operators_for(mobilenet.get_layer("block_2_project"),
                                                                            mobilenet))
    assert "gap" not in operators_for(mobilenet.get_layer("logits"), mobilenet)  # no Flatten stack to replace
    assert {"Conv1", "block_1_project", "block_3_project"} <= first_convs_of_blocks(GraphView.of(mobilenet))
    assert estimate_plan(mobilenet, Plan.of(PLAN)).params < estimate_model(mobilenet).params
    add = rewritten.get_layer("block_2_add")
    assert [tuple(t.shape) for t in add.input] == [(None, 8, 8, 8), (None, 8, 8, 8)]
    x = images(8, 2)
    out = np.asarray(rewritten(x, training=False))
    assert out.shape == (8, CLASSES) and np.all(np.isfinite(out))
    assert np.abs(out).mean() > 1e-3  # batch statistics keep the signal alive: comparisons below mean something


def test_a_replacement_that_changes_the_output_shape_is_refused(mobilenet, monkeypatch):
    import keras

    from hgen.compiler.ops.base import Built
    from hgen.compiler.ops.svd_conv import SvdConv

    def narrower(self, layer, config, x):
        return Built(keras.layers.Conv2D(layer.filters - 1, 1, name=f"{layer.name}_narrow")(x))

    monkeypatch.setattr(SvdConv, "build", narrower)
    with pytest.raises(PlanError, match="'block_2_project'.*would change its output shape"):
        estimate_plan(mobilenet, Plan.of({"block_2_project": "svd_conv"}))


def test_calibration_and_litert_float(rewritten, tmp_path):
    from hgen.compiler.lowering import lower_tflite
    from hgen.compiler.train import calibrate
    from hgen.runtime.engines import open_engine

    x = images(16, 3)
    temperature = calibrate(rewritten, Split(x, np.arange(16) % CLASSES))
    assert np.isfinite(temperature) and temperature > 0
    path = lower_tflite(rewritten, quantize="float").save(tmp_path / "model.tflite")
    engine = open_engine("litert", path)
    expected = np.asarray(rewritten(x[:4], training=False))
    np.testing.assert_allclose(engine.run(x[:4]), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_a_users_saved_functional_model_goes_through(tmp_path):
    import keras
    from keras import layers

    from hgen.compiler.lowering import lower_tflite
    from hgen.compiler.ops import every_layer

    image = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(image)
    x = layers.ReLU(6.0, name="stem_relu6")(layers.BatchNormalization(name="stem_bn")(x))
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.Conv2D(8, 1, name="pw")(layers.ReLU(6.0, name="dw_relu6")(y))
    x = layers.Add(name="residual")([x, layers.BatchNormalization(name="pw_bn")(y)])
    logits = layers.Dense(3, name="logits")(layers.GlobalAveragePooling2D(name="gap")(x))
    keras.Model(image, logits).save(tmp_path / "mine.keras")
    model = load_model_file(tmp_path / "mine.keras")
    calibrate_batchnorm(model, images(16, 4)[:, :16, :16])
    plan = every_layer(model, "svd", ratio=1.0)  # full rank: exact, so the rewrite is checked numerically
    assert set(plan.layers) == {"stem", "pw", "logits"}
    compressed = apply_plan(model, plan)
    assert estimate_plan(model, plan).storage_mb > 0
    x = images(4, 5)[:, :16, :16]
    keras_out = np.asarray(compressed(x, training=False))
    np.testing.assert_allclose(keras_out, np.asarray(model(x, training=False)), rtol=1e-4, atol=1e-4)  # full rank
    lowered = lower_tflite(compressed, quantize="float")
    assert lowered.output_shape == (1, 3)
