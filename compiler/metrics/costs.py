"""Per-layer cost model read off the Keras graph: MACs, activations written, and weights stored.

Costs are looked up by layer class name in `LAYER_COSTS`; compression operators that add custom layers register a
cost function for them (with the weights they really store, e.g. only non-zeros), so S and E count what is stored.
A layer with weights and no cost function is an error, never a silent zero.
Activations: the model input plus the output of every layer that materialises a new tensor (Flatten, Reshape,
Dropout and the input layer itself are views and count nothing; a BatchNormalization right after a conv or dense
layer is folded into it at lowering, so it writes nothing either).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.compiler.errors import ModelCostError
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs per inference."""

    name: str
    kind: str
    macs: int
    activations: int
    weights: int


@dataclass(frozen=True)
class ModelCosts:
    """Totals over a model, and the per-layer rows behind them."""

    layers: tuple[LayerCost, ...]
    input_activations: int

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def activations(self) -> int:
        return self.input_activations + sum(layer.activations for layer in self.layers)

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)


CostFn = Callable[[Any], tuple[int, int]]  # layer -> (macs, weights stored)
LAYER_COSTS: Registry[CostFn] = Registry("layer cost model", ModelCostError)
VIEW_LAYERS = frozenset({"InputLayer", "Flatten", "Reshape", "Dropout", "Identity", "SpatialDropout2D"})
FREE_LAYERS = frozenset({"MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
                         "Activation", "ReLU", "Softmax", "Add", "Concatenate", "ZeroPadding2D", "Rescaling",
                         "Multiply", "LeakyReLU", "UpSampling2D", "Resizing", "Subtract", "Average", "Maximum",
                         "Minimum", "Cropping2D", "Permute", "ELU", "MaxPooling1D", "AveragePooling1D",
                         "GlobalAveragePooling1D", "GlobalMaxPooling1D"})
FOLDS_BATCHNORM = frozenset({"Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense"})


def out_elements(shape: Any) -> int:
    """Elements of one sample's tensor (batch dimension dropped)."""
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ModelCostError(f"cost model needs fixed shapes, got {tuple(shape)}")
    return int(np.prod(dims)) if dims else 1


def _output_shape(layer: Any) -> tuple[int, ...]:
    return tuple(layer.output.shape)


def _input_shape(layer: Any) -> tuple[int, ...]:
    return tuple(layer.input.shape)


def _kernel_weights(layer: Any, biases: int) -> int:
    """A convolution's kernel entries plus one bias per output channel when it has biases."""
    return int(np.prod(layer.kernel.shape)) + (biases if layer.use_bias else 0)


@LAYER_COSTS.register("Conv2D")
def _conv2d(layer: Any) -> tuple[int, int]:
    kh, kw, cin_per_group, cout = layer.kernel.shape
    oh, ow = _output_shape(layer)[1:3]
    weights = _kernel_weights(layer, cout)
    return int(oh * ow * cout * kh * kw * cin_per_group), weights


@LAYER_COSTS.register("DepthwiseConv2D")
def _depthwise(layer: Any) -> tuple[int, int]:
    kh, kw, cin, mult = layer.kernel.shape
    oh, ow = _output_shape(layer)[1:3]
    weights = _kernel_weights(layer, cin * mult)
    return int(oh * ow * cin * mult * kh * kw), weights


@LAYER_COSTS.register("SeparableConv2D")
def _separable(layer: Any) -> tuple[int, int]:
    kh, kw, cin, mult = layer.depthwise_kernel.shape
    cout = layer.pointwise_kernel.shape[-1]
    oh, ow = _output_shape(layer)[1:3]
    macs = oh * ow * (cin * mult * kh * kw + cin * mult * cout)
    weights = int(np.prod(layer.depthwise_kernel.shape) + np.prod(layer.pointwise_kernel.shape))
    return int(macs), weights + (cout if layer.use_bias else 0)


@LAYER_COSTS.register("Dense")
def _dense(layer: Any) -> tuple[int, int]:
    din, dout = layer.kernel.shape
    rows = out_elements(_output_shape(layer)) // dout  # Dense on a [h, w, c] tensor applies per position
    return int(rows * din * dout), int(din * dout + (dout if layer.use_bias else 0))


@LAYER_COSTS.register("Conv1D")
def _conv1d(layer: Any) -> tuple[int, int]:
    k, cin_per_group, cout = layer.kernel.shape
    length = _output_shape(layer)[1]
    weights = _kernel_weights(layer, cout)
    return int(length * cout * k * cin_per_group), weights


@LAYER_COSTS.register("Conv2DTranspose")
def _conv2d_transpose(layer: Any) -> tuple[int, int]:
    """Every input pixel scatters a kh x kw x cout patch: MACs scale with the input, not the output."""
    kh, kw, cout, cin = layer.kernel.shape
    ih, iw = _input_shape(layer)[1:3]
    weights = _kernel_weights(layer, cout)
    return int(ih * iw * cin * kh * kw * cout), weights


def _per_channel(layer: Any, constants: int) -> tuple[int, int]:
    """A normalisation computed at run time: ~one MAC per element, `constants` stored per channel."""
    channels = int(_output_shape(layer)[-1])
    return out_elements(_output_shape(layer)), constants * channels


@LAYER_COSTS.register("LayerNormalization")
@LAYER_COSTS.register("GroupNormalization")
def _normalisation(layer: Any) -> tuple[int, int]:
    return _per_channel(layer, int(bool(getattr(layer, "scale", True))) + int(bool(getattr(layer, "center", True))))


@LAYER_COSTS.register("Normalization")
def _input_normalisation(layer: Any) -> tuple[int, int]:
    """Keras' preprocessing Normalization: a mean and a variance per channel."""
    return _per_channel(layer, 2)


@LAYER_COSTS.register("PReLU")
def _prelu(layer: Any) -> tuple[int, int]:
    return out_elements(_output_shape(layer)), int(np.prod(layer.alpha.shape))


@LAYER_COSTS.register("Embedding")
def _embedding(layer: Any) -> tuple[int, int]:
    """A table lookup: no MACs, the whole table stored."""
    return 0, int(layer.input_dim * layer.output_dim)


@LAYER_COSTS.register("BatchNormalization")
def _batchnorm(layer: Any) -> tuple[int, int]:
    """Folded into the preceding layer at lowering time: no MACs; its 2 per-channel constants are stored."""
    return 0, int(2 * layer.gamma.shape[0]) if layer.gamma is not None else 0


def folded(layer: Any) -> bool:
    """A BatchNormalization whose producer is a conv/dense layer: lowering folds it into that layer's weights."""
    if type(layer).__name__ != "BatchNormalization":
        return False
    history = getattr(layer.input, "_keras_history", None)
    return history is not None and type(history.operation).__name__ in FOLDS_BATCHNORM


def layer_cost(layer: Any) -> LayerCost:
    kind = type(layer).__name__
    if kind in VIEW_LAYERS:
        return LayerCost(layer.name, kind, 0, 0, 0)
    activations = out_elements(_output_shape(layer))
    if kind in FREE_LAYERS:
        return LayerCost(layer.name, kind, 0, activations, 0)
    if kind not in LAYER_COSTS:
        if not layer.weights:
            return LayerCost(layer.name, kind, 0, activations, 0)
        raise ModelCostError(f"layer '{layer.name}' of type {kind} has weights but no registered cost model; "
                             f"known: {', '.join(LAYER_COSTS.names())}")
    macs, weights = LAYER_COSTS.get(kind)(layer)
    return LayerCost(layer.name, kind, macs, 0 if folded(layer) else activations, weights)


def model_costs(model: Any) -> ModelCosts:
    """Walk a built Keras model (functional or Sequential) and total its costs."""
    if not model.built or not model.inputs:
        raise ModelCostError("the model must be built with a fixed input shape before costing it")
    rows = tuple(layer_cost(layer) for layer in model.layers)
    return ModelCosts(rows, sum(out_elements(t.shape) for t in model.inputs))
