"""Per-layer cost model read off the Keras graph: MACs, activations written, and weights stored.

Costs are looked up by layer class name in `LAYER_COSTS`; compression operators that add custom layers register a
cost function for them (with the weights they really store, e.g. only non-zeros), so S and E count what is stored.
A layer with weights and no cost function is an error, never a silent zero.
Activations: the model input plus the output of every layer that materialises a new tensor (Flatten, Reshape,
Dropout and the input layer itself are views and count nothing).
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
                         "Multiply", "LeakyReLU", "UpSampling2D", "Resizing"})


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


@LAYER_COSTS.register("Conv2D")
def _conv2d(layer: Any) -> tuple[int, int]:
    kh, kw, cin_per_group, cout = layer.kernel.shape
    oh, ow = _output_shape(layer)[1:3]
    weights = int(np.prod(layer.kernel.shape)) + (cout if layer.use_bias else 0)
    return int(oh * ow * cout * kh * kw * cin_per_group), weights


@LAYER_COSTS.register("DepthwiseConv2D")
def _depthwise(layer: Any) -> tuple[int, int]:
    kh, kw, cin, mult = layer.kernel.shape
    oh, ow = _output_shape(layer)[1:3]
    weights = int(np.prod(layer.kernel.shape)) + (cin * mult if layer.use_bias else 0)
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


@LAYER_COSTS.register("BatchNormalization")
def _batchnorm(layer: Any) -> tuple[int, int]:
    """Folded into the preceding layer at lowering time: no MACs; its 2 per-channel constants are stored."""
    return 0, int(2 * layer.gamma.shape[0]) if layer.gamma is not None else 0


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
    return LayerCost(layer.name, kind, macs, activations, weights)


def model_costs(model: Any) -> ModelCosts:
    """Walk a built Keras model (functional or Sequential) and total its costs."""
    if not model.built or not model.inputs:
        raise ModelCostError("the model must be built with a fixed input shape before costing it")
    rows = tuple(layer_cost(layer) for layer in model.layers)
    return ModelCosts(rows, sum(out_elements(t.shape) for t in model.inputs))
