"""Small models for testing the operators (and the search built on them): a VGG-style block and random weights.

The VGG-style model covers what LeNet-5 does not: same/valid padding, a strided conv, a dilated conv, two convs
per block, and a Functional (not Sequential) graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def vgg_block_model(input_shape: tuple[int, int, int] = (16, 16, 3), num_classes: int = 10) -> Any:
    """conv3x3 same x2 - pool - conv3x3 stride 2 same - conv3x3 valid - conv3x3 dilation 2 same - flatten -
    fc32 - logits, as a Functional model."""
    import keras
    from keras import layers

    image = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="b1_conv1")(image)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="b1_conv2")(x)
    x = layers.MaxPooling2D(2, name="b1_pool")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="b2_conv1")(x)
    x = layers.Conv2D(16, 3, padding="valid", activation="relu", name="b2_conv2")(x)
    x = layers.Conv2D(12, 3, padding="same", dilation_rate=2, activation="relu", name="b2_conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(image, logits, name="vgg_block")


def randomise(model: Any, seed: int = 0, scale: float = 0.3) -> Any:
    """Give every weight (biases included) random values, so exactness tests also exercise the biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0.0, scale, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


def calibrate_batchnorm(model: Any, x: np.ndarray) -> Any:
    """Set every BatchNorm's moving statistics from one batch (momentum 0 for one training-mode pass).

    A randomly initialised MobileNetV2 keeps mean 0 / variance 1 and its activations vanish (~1e-11 logits), which
    makes every numeric comparison pass trivially; with batch statistics the activations are O(1).
    """
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(np.asarray(x, np.float32), training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    return model
