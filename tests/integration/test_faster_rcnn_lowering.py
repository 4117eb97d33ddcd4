"""H-Faster-RCNN's two-stage detector lowers like the other zoo models (issue 21): LiteRT float equals Keras, LiteRT
full-int8 converts and runs with outputs that follow float's, and TVM float (native library) equals Keras: the graph
holds only Conv2D, pooling and Concatenate, so no operator needs a fallback. Trained for seconds on digit canvases
(a random network's outputs would make the int8 comparison meaningless)."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.lowering import lower_tflite, lower_tvm
from hgen.runtime.engines import open_engine


@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    from hgen.compiler.data.detection import load_detection_dataset
    from hgen.compiler.models import build_model
    from hgen.compiler.models.two_stage_detector import TwoStageTrainConfig, train_two_stage

    data = load_detection_dataset("digits-det", seed=0, limit=300)
    model = build_model("two_stage_detector", data.input_shape, data.num_classes)
    train_two_stage(model, data.train, data.num_classes, TwoStageTrainConfig(epochs=2))
    return model, data


def keras_outputs(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(model(x, training=False), np.float64)


def test_litert_float_equals_keras_and_int8_follows_it(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, data = trained
    x = data.test.x[:8]
    expected = keras_outputs(model, x)
    float_engine = open_engine("litert", lower_tflite(model, quantize="float").save(tmp_path / "float.tflite"))
    got = np.concatenate([float_engine.run(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    lowered = lower_tflite(model, quantize="int8", representative_data=data.train.x[:100])
    assert lowered.precision == "int8"
    int8_engine = open_engine("litert", lowered.save(tmp_path / "int8.tflite"))
    quantised = np.concatenate([int8_engine.run(x[i:i + 1]) for i in range(len(x))])
    assert quantised.shape == expected.shape and np.all(np.isfinite(quantised))
    correlation = np.corrcoef(quantised.ravel(), expected.ravel())[0, 1]
    print(f"int8 vs float correlation {correlation:.4f}")  # shown with -s
    assert correlation > 0.95


def test_tvm_native_library_equals_keras(trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, data = trained
    library = lower_tvm(lower_tflite(model, quantize="float").content, "x86_64-native", tmp_path / "model")
    shape = [1, *(int(d) for d in model.outputs[0].shape[1:])]
    engine = open_engine("tvm", library.path, {"input_shape": [1, *data.input_shape], "output_shape": shape})
    expected = keras_outputs(model, data.test.x[:1])
    np.testing.assert_allclose(engine.run(data.test.x[:1]), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
