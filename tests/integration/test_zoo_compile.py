"""`hgen-compile` on a user's own functional Keras file with a residual add, BatchNorm, a depthwise conv, ReLU6 and
global pooling: search, fine-tune, calibrate, LiteRT bundle; the device's outputs match the saved model."""

from __future__ import annotations

import numpy as np

from hgen.compiler.compile import compile_config, compile_hdnn
from hgen.compiler.data import load_dataset

# S below the model's own 0.0422 MB: the search must rewrite it (on this tiny model only stem_stride saves S).
DEMANDS = {"accuracy": 0.1, "latency_ms": 60000, "storage_mb": 0.04, "energy_mj": 5, "labour": 0.1}


def users_model(path):
    import keras
    from keras import layers

    image = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(image)
    x = layers.ReLU(6.0, name="stem_relu6")(layers.BatchNormalization(name="stem_bn")(x))
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.Conv2D(8, 1, name="pw")(layers.ReLU(6.0, name="dw_relu6")(y))
    x = layers.Add(name="residual")([x, layers.BatchNormalization(name="pw_bn")(y)])
    logits = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(image, logits, name="mine")
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = load_dataset("digits:lowres", seed=0)  # trained past chance: the compile refuses a model at chance
    model.fit(data.train.x[:300], data.train.y[:300], epochs=10, verbose=0)
    model.save(path)
    return path


def test_a_users_residual_model_compiles_to_a_working_bundle(tmp_path):
    import keras

    from hgen.runtime.bundle import load_bundle

    config = compile_config(model=str(users_model(tmp_path / "mine.keras")), dataset="digits:lowres", device="rpi4",
                            episodes=1, final_epochs=1, finetune_samples=100, limit=100, budget_minutes=2,
                            out=str(tmp_path / "out"), demands=DEMANDS)
    result = compile_hdnn(config)
    assert set(result.summary["plan"]) <= {"stem", "pw", "logits"} and "stem" in result.summary["plan"]
    assert 0 < result.summary["final"]["storage_mb"] <= 0.04 and result.summary["final"]["energy_mj"] > 0
    model = keras.models.load_model(result.out / "model.keras", compile=False)
    x = load_dataset("digits:lowres", seed=0).test.x[:50]
    bundle = result.summary["bundle"]
    with load_bundle(bundle["archive"], trusted_public_key=bundle["public_key"], expected_target="rpi4") as loaded:
        device = loaded.engine.run(x)
    np.testing.assert_allclose(device, model.predict(x, verbose=0), rtol=1e-3, atol=1e-3)
