"""`hgen-compile --model FILE` with a field team's own small Keras classifiers (found by a review acting as one):

* a model taking raw 0..255 pixels through a leading `Rescaling(1/255)` (the Keras guides' way) was fed hgen's
  [0, 1] images: at chance in the compile, silently; it is now adapted and says so;
* an adapted `Normalization` layer lost its mean and variance in every rewritten model (the clone kept 0 and 1), so
  the search measured and the bundle ran another model than the model.keras it wrote;
* a custom layer, a Lambda, free or other input sizes and a uint8 input were Keras' own messages, a bare "does not
  match", or (uint8) exit 1 from LiteRT after the search had started: now exit 2 before training, saying what to do;
* a web model tf2onnx cannot express (GELU) was left, invalid, in the bundle folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

from hgen.compiler.cli.main import main
from hgen.compiler.data import load_dataset

CHEAP = ["--dataset", "digits", "--device", "host", "--accuracy", "0.3", "--latency-ms", "60000", "--episodes", "1",
         "--evaluations", "1", "--final-epochs", "1", "--finetune-samples", "200", "--allow-miss"]


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits", seed=0)


class TrainingReached(Exception):
    """Raised where the compile would start training: a refusal must come before it."""


def _fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _raw_pixel_model(digits: Any, path: Path) -> keras.Model:
    """Rescaling(1/255) on raw pixels, an adapted Normalization, BatchNorm, Dropout: trained on raw pixels."""
    x, y = digits.train.x * 255.0, digits.train.y
    norm = layers.Normalization(name="norm")
    norm.adapt(digits.train.x[:256])
    image = keras.Input((28, 28, 1), name="image")
    h = norm(layers.Rescaling(1 / 255.0, name="to_unit")(image))
    h = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(h)
    h = layers.ReLU(name="r1")(layers.BatchNormalization(momentum=0.9, name="bn1")(h))
    h = layers.MaxPooling2D(4, name="p1")(h)
    h = layers.Dropout(0.2, name="drop")(layers.Flatten(name="flat")(h))
    model = _fit(keras.Model(image, layers.Dense(10, name="logits")(h), name="field"), x, y, epochs=5)
    model.save(path)
    return model


def test_a_normalization_layer_keeps_its_statistics_in_a_rewritten_model(digits) -> None:
    """Every candidate (also the identity plan) of a model with an adapted Normalization ran it as mean 0, var 1."""
    from hgen.compiler.ops import apply_plan
    from hgen.compiler.ops.plan import Plan

    norm = layers.Normalization(name="norm")
    norm.adapt(digits.train.x[:128] * 3.0 + 1.0)
    image = keras.Input((28, 28, 1))
    h = layers.Flatten()(layers.Conv2D(4, 3, name="c1")(norm(image)))
    model = keras.Model(image, layers.Dense(10, name="logits")(h))
    x = digits.test.x[:32]
    for plan in ({"c1": "identity"}, {"logits": ("svd_dense", 1.0)}):
        rewritten = apply_plan(model, Plan.of(plan))
        np.testing.assert_allclose(np.asarray(rewritten(x)), np.asarray(model(x)), rtol=1e-4, atol=1e-4)


def test_a_raw_pixel_model_compiles_and_its_bundle_answers_like_it(digits, tmp_path, caplog) -> None:
    from hgen.runtime.bundle import load_bundle

    user = _raw_pixel_model(digits, tmp_path / "field.keras")
    raw = np.round(digits.test.x * 255.0)
    user_accuracy = float((np.asarray(user.predict(raw, verbose=0)).argmax(1) == digits.test.y).mean())
    assert user_accuracy > 0.6  # a usable model on its own raw pixels
    out = tmp_path / "out"
    assert main(["compile", "--model", str(tmp_path / "field.keras"), *CHEAP, "--out", str(out)]) == 0
    assert "takes raw 0..255 pixels" in caplog.text  # logged: on a terminal, a line of its own
    summary = json.loads((out / "summary.json").read_text())
    assert summary["origin"]["accuracy_model_only"] == pytest.approx(user_accuracy, abs=0.02)  # was 0.11 (chance)
    final = keras.models.load_model(out / "model.keras", compile=False)
    bundle = summary["bundle"]
    with load_bundle(bundle["archive"], trusted_public_key=bundle["public_key"]) as loaded:
        frames = raw * loaded.manifest.input.scale + loaded.manifest.input.offset  # as the device feeds them
        device = np.asarray(loaded.engine.run(frames))
    keras_logits = np.asarray(final.predict(frames, verbose=0))
    assert np.mean(device.argmax(1) == keras_logits.argmax(1)) >= 0.99  # was 0.14 with a Normalization dropped
    np.testing.assert_allclose(device, keras_logits, atol=1e-3 * max(1.0, np.abs(keras_logits).max()))


def _custom_layer_model(path: Path) -> None:
    class Scale(layers.Layer):  # not registered: the compile cannot import the user's code
        def build(self, shape: Any) -> None:
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, t: Any) -> Any:
            return t * self.w

    image = keras.Input((28, 28, 1))
    keras.Model(image, layers.Dense(10)(layers.Flatten()(Scale()(image)))).save(path)


def _model(path: Path, shape: tuple, dtype: str = "float32", lam: bool = False) -> None:
    image = keras.Input(shape, dtype=dtype)
    h = layers.Lambda(lambda t: t * 2.0 - 1.0)(image) if lam else layers.Rescaling(1 / 255.0)(image)
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(h))
    keras.Model(image, layers.Dense(10)(h)).save(path)


@pytest.mark.parametrize("case, said", [
    ("custom", "uses 'Scale', which is not part of Keras"),
    ("lambda", "holds a Lambda layer"),
    ("free_size", "with free dimensions; hgen compiles it for one fixed size: save it with keras.Input(shape=(28, "),
    ("other_size", "give a model built for (28, 28, 1)"),
    ("uint8", "takes uint8 input"),
])
def test_a_user_model_hgen_cannot_use_exits_2_before_training_saying_what_to_do(case, said, tmp_path, capsys,
                                                                                 monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise TrainingReached

    monkeypatch.setattr("hgen.compiler.compile._train_base", refuse)
    path = tmp_path / f"{case}.keras"
    if case == "custom":
        _custom_layer_model(path)
    else:
        shape = {"free_size": (None, None, 1), "other_size": (64, 64, 3)}.get(case, (28, 28, 1))
        _model(path, shape, dtype="uint8" if case == "uint8" else "float32", lam=case == "lambda")
    assert main(["compile", "--model", str(path), *CHEAP, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and "Exception encountered" not in err, err


def test_an_onnx_export_tf2onnx_cannot_express_leaves_no_file(tmp_path) -> None:
    from hgen.compiler.errors import CompilerError
    from hgen.compiler.lowering import lower_tflite
    from hgen.compiler.lowering.onnx_io import export_onnx

    image = keras.Input((8, 8, 1))
    model = keras.Model(image, layers.Dense(3)(layers.Dense(4, activation="gelu")(layers.Flatten()(image))))
    target = tmp_path / "model.web.onnx"
    with pytest.raises(CompilerError, match="TFL_GELU"):
        export_onnx(lower_tflite(model).content, target)
    assert not target.exists()
