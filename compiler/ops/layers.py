"""Keras layers with a fixed sparsity mask, and their cost models (only non-zeros are stored).

The mask is a non-trainable weight multiplied into the kernel on every call, so a masked entry gets a zero
gradient and stays zero through any fine-tune (Adam's update is zero for a zero gradient). The cost model counts
the mask's non-zeros: S (Eq. 11) then counts the values of a sparse encoding (index overhead not counted), and
MACs count one multiply-accumulate per non-zero weight per output position.

TFLite: the converter constant-folds `kernel * mask` into one dense constant, so a .tflite file of a masked model
holds the zeros densely (same file size as the dense layer); the savings S reports need a sparse encoding
(e.g. TFLite's experimental sparsity format or a sparse kernel library) on the device.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from hgen.compiler.metrics.costs import LAYER_COSTS


def _add_mask(layer: Any) -> Any:
    return layer.add_weight(name="mask", shape=tuple(layer.kernel.shape), initializer="ones", trainable=False)


class _SavesEveryVariable:
    """Keras' Dense/Conv save only kernel and bias (their quantisation-aware format), which would drop the mask
    from a saved .keras file; the generic Layer format saves every variable in order. These layers support
    neither quantisation modes nor LoRA, so nothing else is lost."""

    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)


@keras.saving.register_keras_serializable(package="hgen")
class MaskedConv2D(_SavesEveryVariable, keras.layers.Conv2D):
    """Conv2D whose kernel is multiplied by a fixed 0/1 mask of the kernel's shape."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.sparsity_mask = _add_mask(self)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        return super().convolution_op(inputs, ops.multiply(kernel, self.sparsity_mask))

    def set_mask(self, mask: np.ndarray) -> None:
        self.sparsity_mask.assign(np.broadcast_to(np.asarray(mask, np.float32), tuple(self.kernel.shape)))


@keras.saving.register_keras_serializable(package="hgen")
class MaskedDense(_SavesEveryVariable, keras.layers.Dense):
    """Dense whose kernel is multiplied by a fixed 0/1 mask of the kernel's shape."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.sparsity_mask = _add_mask(self)

    def call(self, inputs: Any, training: Any = None) -> Any:
        x = ops.matmul(inputs, ops.multiply(self.kernel, self.sparsity_mask))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return self.activation(x) if self.activation is not None else x

    def set_mask(self, mask: np.ndarray) -> None:
        self.sparsity_mask.assign(np.asarray(mask, np.float32))


def mask_nonzeros(layer: Any) -> int:
    return int(np.count_nonzero(np.asarray(layer.sparsity_mask)))


@LAYER_COSTS.register("MaskedConv2D")
def _masked_conv_cost(layer: Any) -> tuple[int, int]:
    oh, ow = tuple(layer.output.shape)[1:3]
    nnz = mask_nonzeros(layer)
    return int(oh * ow * nnz), nnz + (layer.filters if layer.use_bias else 0)


@LAYER_COSTS.register("MaskedDense")
def _masked_dense_cost(layer: Any) -> tuple[int, int]:
    rows = int(np.prod(tuple(layer.output.shape)[1:-1] or (1,)))
    nnz = mask_nonzeros(layer)
    return rows * nnz, nnz + (layer.units if layer.use_bias else 0)
