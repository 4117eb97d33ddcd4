"""Every operator's rewrite converts to TFLite and the LiteRT interpreter reproduces the Keras output (float)."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.models import build_model
from hgen.compiler.ops import Plan, apply_plan
from hgen.compiler.ops.testing import randomise, vgg_block_model

VGG_CONVS = ["b1_conv1", "b1_conv2", "b2_conv1", "b2_conv2", "b2_conv3"]


@pytest.fixture(scope="module")
def lenet():
    return randomise(build_model("lenet5", (28, 28, 1), 10), seed=3, scale=0.2)


@pytest.fixture(scope="module")
def vgg():
    return randomise(vgg_block_model(), seed=4)


def tflite_outputs(model, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=blob)
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(sink["index"])


def check_round_trip(model, x):
    keras_out = np.asarray(model(x, training=False))
    np.testing.assert_allclose(tflite_outputs(model, x), keras_out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["identity", "svd_conv", "depthwise_separable", "mlpconv", "fire", "sparse_random",
                                  "sparse_decompose"])
def test_conv_operator_round_trips_through_tflite(name, vgg):
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)
    plan = Plan.of({conv: name for conv in VGG_CONVS if not (name == "sparse_random" and conv == "b1_conv1")})
    check_round_trip(apply_plan(vgg, plan, x), x)


@pytest.mark.parametrize("plan", [{"fc1": "svd_dense", "logits": "svd_dense"},
                                  {"fc1": "sparse_coding", "logits": "sparse_coding"},
                                  {"logits": "gap"}])
def test_fc_operator_round_trips_through_tflite(plan, lenet):
    x = np.random.default_rng(1).random((8, 28, 28, 1)).astype(np.float32)
    check_round_trip(apply_plan(lenet, Plan.of(plan), x), x)


def test_masked_layers_survive_a_keras_save_and_load(tmp_path):
    """A saved compressed model must load back with its masks (the compiler writes model.keras)."""
    import keras
    import numpy as np

    from hgen.compiler.models import build_model
    from hgen.compiler.ops import Plan, apply_plan

    base = build_model("lenet5", (28, 28, 1), 10)
    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")
    model = apply_plan(base, Plan.of({"conv2": "sparse_random", "fc1": "sparse_coding"}), x)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    masks = [layer.sparsity_mask for layer in loaded.layers if hasattr(layer, "sparsity_mask")]
    assert masks and all(np.count_nonzero(np.asarray(m)) < np.asarray(m).size for m in masks)
