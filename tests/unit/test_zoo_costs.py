"""The cost model on the layer types mobile backbones and users' models bring (by hand on tiny layers)."""

from __future__ import annotations

import pytest

from hgen.compiler.errors import ModelCostError
from hgen.compiler.metrics import model_costs


def rows(model):
    return {row.name: row for row in model_costs(model).layers}


def test_mobile_block_layers_by_hand():
    import keras
    from keras import layers

    image = keras.Input((6, 6, 4))
    x = layers.Conv2D(8, 1, use_bias=False, name="expand")(image)           # 36*8*4 MACs, 32 weights
    x = layers.BatchNormalization(name="expand_bn")(x)                      # folded: 16 constants, no tensor
    x = layers.ReLU(6.0, name="relu6")(x)                                   # 288 activations
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)  # 36*8*9 MACs, 72 weights
    x = layers.Conv2D(4, 1, use_bias=False, name="project")(x)
    x = layers.Add(name="add")([image, x])
    x = layers.BatchNormalization(name="post_add_bn")(x)                    # not after a conv: writes a tensor
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(image, layers.Dense(3, name="fc")(x))
    by = rows(model)
    assert (by["expand"].macs, by["expand"].weights) == (36 * 8 * 4, 32)
    assert (by["expand_bn"].macs, by["expand_bn"].weights, by["expand_bn"].activations) == (0, 16, 0)
    assert by["relu6"].activations == 288
    assert (by["dw"].macs, by["dw"].weights) == (36 * 8 * 9, 72)
    assert (by["add"].macs, by["add"].activations) == (0, 144)
    assert by["post_add_bn"].activations == 144
    assert by["gap"].activations == 4


def test_other_weighted_layer_types_have_costs():
    import keras
    from keras import layers

    image = keras.Input((4, 4, 2))
    x = layers.Conv2DTranspose(3, 2, strides=2, name="up")(image)         # 16 pixels * 2 * 4 * 3 MACs
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.PReLU(name="prelu")(x)
    x = layers.Reshape((64, 3), name="seq")(x)
    x = layers.Conv1D(5, 3, name="c1d")(x)                                 # 62 * 5 * 3 * 3 MACs
    model = keras.Model(image, x)
    by = rows(model)
    assert (by["up"].macs, by["up"].weights) == (16 * 2 * 4 * 3, 2 * 2 * 3 * 2 + 3)
    assert by["ln"].weights == 6 and by["prelu"].weights == 8 * 8 * 3
    assert (by["c1d"].macs, by["c1d"].weights) == (62 * 5 * 9, 3 * 3 * 5 + 5)


def test_an_unknown_layer_with_weights_is_still_an_error():
    import keras
    from keras import layers

    class Gate(layers.Layer):
        def build(self, shape):
            self.g = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.g

    image = keras.Input((4, 4, 2))
    model = keras.Model(image, Gate(name="gate")(layers.DepthwiseConv2D(3, padding="same")(image)))
    with pytest.raises(ModelCostError, match="'gate' of type Gate has weights but no registered cost model"):
        model_costs(model)
