"""`stem_stride`: where it applies (the stem of a pooled classifier only), what it saves, and that the rewritten
model still fits, combines with the fitted operators, lowers to LiteRT and runs there."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from hgen.compiler.ops import (OPERATORS, OperatorError, Plan, PlanError, apply_plan, estimate_model, estimate_plan,
                               operators_for)
from hgen.compiler.ops.graph import GraphView

pytestmark = pytest.mark.unit


def pooled(side: int = 32) -> keras.Model:
    """Rescaling -> stem conv (stride 2) -> a residual block -> a strided conv -> GAP -> Dense: a tiny MobileNet."""
    image = keras.Input((side, side, 3), name="image")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="scale")(image)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="body")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.Conv2D(16, 3, strides=2, padding="valid", activation="relu", name="down")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(image, keras.layers.Dense(4, name="logits")(x))


def flattened() -> keras.Model:
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(image)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(image, keras.layers.Dense(4, name="logits")(x))


def grid() -> keras.Model:
    """A detector-like model: its output is a spatial map, which a stride would change."""
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="stem")(image)
    return keras.Model(image, keras.layers.Conv2D(6, 1, name="head")(x))


def reason(model: keras.Model, layer: str, factor: int = 2) -> str:
    operator = OPERATORS.get("stem_stride")
    with pytest.raises(OperatorError) as caught:
        operator.check(model.get_layer(layer), operator.config(options={"factor": factor}), GraphView.of(model))
    return str(caught.value)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return pooled()


def test_applies_to_the_stem_of_a_pooled_classifier_only(model):
    assert "stem_stride" in operators_for(model.get_layer("stem"), model)
    assert "stem_stride" not in operators_for(model.get_layer("body"), model)
    assert "not the stem" in reason(model, "body")
    assert "built for inputs" in reason(flattened(), "stem")  # the Dense after the Flatten would get other inputs
    assert "output" in reason(grid(), "stem")  # the detector's grid would change
    assert "'down' cannot take the smaller maps" in reason(pooled(side=8), "stem")  # 8 / 4 = 2 < its 3x3 'valid'


def test_config_is_strict(model):
    with pytest.raises(PlanError, match="factor"):
        estimate_plan(model, Plan.of({"stem": {"operator": "stem_stride", "options": {"factor": 8}}}))
    with pytest.raises(PlanError, match="ratio"):
        estimate_plan(model, Plan.of({"stem": ("stem_stride", 0.5)}))


def test_saves_activations_and_macs_not_weights(model):
    base, strided = estimate_model(model), estimate_plan(model, Plan.of({"stem": "stem_stride"}))
    assert strided.params == base.params
    before_stem = 2 * 32 * 32 * 3  # the input and the Rescaling's output do not change
    assert strided.activations - before_stem < 0.3 * (base.activations - before_stem)  # every later map: ~a quarter
    assert strided.macs < 0.4 * base.macs
    assert strided.storage_mb < base.storage_mb


def test_rewritten_model_copies_the_kernel_keeps_outputs_and_lowers(model, tmp_path):
    from hgen.compiler.lowering import lower_tflite
    from hgen.runtime.engines import open_engine

    x = np.random.default_rng(0).random((32, 32, 32, 3)).astype("float32")
    plan = Plan.of({"stem": "stem_stride", "down": "sparse_random"})  # a fitted operator on the smaller maps
    new = apply_plan(model, plan, x)
    stem = new.get_layer("stem_stride")
    assert tuple(stem.strides) == (4, 4)
    np.testing.assert_array_equal(stem.get_weights()[0], model.get_layer("stem").get_weights()[0])
    keras_out = np.asarray(new(x[:4]))
    assert keras_out.shape == (4, 4) and np.isfinite(keras_out).all()
    engine = open_engine("litert", lower_tflite(new, quantize="float").save(tmp_path / "strided.tflite"))
    np.testing.assert_allclose(np.concatenate([engine.run(x[i:i + 1]) for i in range(4)]), keras_out,
                               rtol=1e-4, atol=1e-4)
