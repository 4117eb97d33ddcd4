"""Operator details that deep mobile backbones reach: fire on a 1x1 map with few calibration rows, and MobileNet's
strided depthwise convs opening blocks for the skip-first-conv policy."""

from __future__ import annotations

import numpy as np

from hgen.compiler.ops import Plan, apply_plan, first_convs_of_blocks
from hgen.compiler.ops.fire import principal_directions
from hgen.compiler.ops.graph import GraphView


def test_principal_directions_pad_past_the_data_rank():
    channels = np.random.default_rng(0).normal(size=(5, 12))
    directions = principal_directions(channels, 8)
    assert directions.shape == (12, 8)
    assert np.allclose(directions[:, 5:], 0.0) and np.allclose(np.linalg.norm(directions[:, :4], axis=0), 1.0)


def test_fire_on_a_one_by_one_map_with_few_samples():
    import keras
    from keras import layers

    image = keras.Input((2, 2, 3))
    x = layers.MaxPooling2D(2, name="pool")(image)                      # 1x1 map: one row per sample
    x = layers.Conv2D(40, 1, activation="relu", name="wide")(x)
    x = layers.Conv2D(40, 1, name="next")(x)                            # squeeze 10 > 4 calibration rows
    model = keras.Model(image, layers.Flatten(name="flat")(x))
    calibration = np.random.default_rng(1).random((4, 2, 2, 3)).astype(np.float32)
    rewritten = apply_plan(model, Plan.of({"next": "fire"}), calibration)
    assert np.all(np.isfinite(np.asarray(rewritten(calibration))))


def test_strided_depthwise_opens_a_block():
    import keras
    from keras import layers

    image = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 1, name="expand1")(image)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    x = layers.Conv2D(4, 1, name="project")(x)
    x = layers.Conv2D(4, 1, name="expand2")(x)
    assert first_convs_of_blocks(GraphView.of(keras.Model(image, x))) == {"expand1", "project"}
