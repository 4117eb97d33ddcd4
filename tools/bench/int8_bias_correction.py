"""Empirical bias correction of int8 weight rounding (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2, empirical variant), applied before the TFLite converter: a lever
`own_data_int8_levers.py` measures (issue 14). It is not in the compiler: on own_data's trained mobilenet_v2 it did
not raise int8 agreement with float (own_data_int8_levers.md), so `hgen-compile` does not apply it.

Why: rounding a layer's weights to int8 adds `conv(x, Wq - W)` to its output; per channel that error has a mean
that is not zero (a depthwise 3x3 channel has only 9 weights, so its rounding errors do not average out), and the
shift travels through every later layer. Its mean over representative inputs is measured here and subtracted from
the layer's bias, so the int8 model's outputs are centred where the float model's are.

How it matches the converter: TFLite quantises every Conv2D, DepthwiseConv2D and FullyConnected weight symmetric
per output channel (scale = max|w| / 127, values in [-127, 127]), after folding the following BatchNormalization
into the weights. Per-channel symmetric rounding commutes with that per-channel scaling, so rounding the unfolded
Keras kernel gives the same error up to the BatchNorm factor, which the shift goes through as well: a layer with a
bias gets `bias -= error`; a layer without one whose only consumer is a BatchNormalization gets
`moving_mean += error` (BN(z - e) with mean m is BN(z) with mean m + e). Other layers are left alone and reported.

The correction is temporary (`bias_corrected` restores the weights on exit): the user's float model is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

INT8_WEIGHT_LEVELS = 127  # symmetric narrow range, as TFLite's weight quantisation


@dataclass(frozen=True)
class BiasCorrection:
    """What was shifted: corrected layer names, layers left alone (no bias and no BatchNorm after them), and the
    largest shift (in the layer's output units) and the samples its mean was taken over."""

    corrected: tuple[str, ...]
    skipped: tuple[str, ...]
    max_shift: float
    samples: int


def quantise_per_channel(kernel: np.ndarray, *, depthwise: bool = False) -> np.ndarray:
    """`kernel` rounded to int8 levels per output channel and scaled back: what the converter stores, in float.
    Output channels are the last axis (Conv2D, Dense), or the last two of a depthwise kernel (in x multiplier)."""
    channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
    flat = kernel.reshape(-1, channels)
    peak = np.abs(flat).max(axis=0)
    scale = np.where(peak > 0, peak / INT8_WEIGHT_LEVELS, 1.0)
    rounded = np.clip(np.round(flat / scale), -INT8_WEIGHT_LEVELS, INT8_WEIGHT_LEVELS) * scale
    return rounded.reshape(kernel.shape).astype(kernel.dtype)


def _quantised_layers(model: Any) -> list[Any]:
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return [layer for layer in _all_layers(model) if isinstance(layer, kinds) and _supported(layer)]


def _supported(layer: Any) -> bool:
    """Linear layers whose rounding error is `op(x, dW)` (no fused activation, no grouped convolution)."""
    import keras

    linear = getattr(layer, "activation", None) in (None, keras.activations.linear)
    return linear and getattr(layer, "groups", 1) == 1


def _all_layers(model: Any) -> list[Any]:
    layers, stack = [], list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        inner = getattr(layer, "layers", None)
        if inner:
            stack.extend(reversed(inner))
        else:
            layers.append(layer)
    return layers


def _weight_error(layer: Any) -> np.ndarray:
    """Rounded minus float kernel, in the kernel's shape."""
    import keras

    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    value = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
    return quantise_per_channel(value, depthwise=depthwise) - value


def _output_error(layer: Any, x: Any, delta: np.ndarray) -> tuple[np.ndarray, int]:
    """Sum over a batch (and positions) of `op(x, delta)` per output channel, and how many values it summed."""
    import keras
    from keras import ops

    if isinstance(layer, keras.layers.Dense):
        out = ops.matmul(x, delta)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        out = ops.depthwise_conv(x, delta, strides=layer.strides, padding=layer.padding,
                                 data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    else:
        out = ops.conv(x, delta, strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
                       dilation_rate=layer.dilation_rate)
    out = np.asarray(ops.convert_to_numpy(out), np.float64)
    if getattr(layer, "data_format", "channels_last") == "channels_first" and out.ndim == 4:
        out = np.moveaxis(out, 1, -1)
    rows = out.reshape(-1, out.shape[-1])
    return rows.sum(axis=0), len(rows)


def _consumer_norm(layer: Any, layers: list[Any]) -> Any | None:
    """The BatchNormalization that alone consumes `layer`'s output, if any."""
    import keras

    consumers = [other for other in layers if other is not layer and _reads(other, layer.output)]
    if len(consumers) == 1 and isinstance(consumers[0], keras.layers.BatchNormalization):
        return consumers[0]
    return None


def _reads(layer: Any, tensor: Any) -> bool:
    try:
        inputs = layer.input
    except (AttributeError, ValueError):  # a layer never called, or called more than once
        return False
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return any(item is tensor for item in inputs)


def mean_output_errors(model: Any, data: np.ndarray, *, batch_size: int = 50) -> dict[str, np.ndarray]:
    """Per quantised layer, the mean per output channel of the error int8 weight rounding adds to its output,
    over `data` (the float model's own inputs to that layer)."""
    import keras

    targets = _quantised_layers(model)
    if not targets:
        return {}
    probe = keras.Model(model.inputs, [layer.input for layer in targets])
    deltas = [_weight_error(layer) for layer in targets]
    sums: list[np.ndarray | float] = [0.0] * len(targets)
    counts = [0] * len(targets)
    for start in range(0, len(data), batch_size):
        inputs = probe(np.asarray(data[start:start + batch_size], np.float32), training=False)
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for k, (layer, x, delta) in enumerate(zip(targets, inputs, deltas)):
            total, count = _output_error(layer, x, delta)
            sums[k] += total
            counts[k] += count
    return {layer.name: sums[k] / max(counts[k], 1) for k, layer in enumerate(targets)}


@contextmanager
def bias_corrected(model: Any, data: np.ndarray, *, batch_size: int = 50) -> Iterator[BiasCorrection]:
    """`model` with each quantised layer's mean int8 weight-rounding error subtracted (module doc), restored on exit."""
    import keras

    layers = _all_layers(model)
    errors = mean_output_errors(model, data, batch_size=batch_size)
    saved: list[tuple[Any, np.ndarray]] = []
    corrected, skipped, largest = [], [], 0.0
    try:
        for layer in _quantised_layers(model):
            error = errors[layer.name]
            norm = None if getattr(layer, "use_bias", False) else _consumer_norm(layer, layers)
            if getattr(layer, "use_bias", False):
                variable, sign = layer.bias, -1.0
            elif norm is not None:
                variable, sign = norm.moving_mean, 1.0
            else:
                skipped.append(layer.name)
                continue
            value = np.asarray(keras.ops.convert_to_numpy(variable))
            saved.append((variable, value))
            variable.assign((value + sign * error).astype(value.dtype))
            corrected.append(layer.name)
            largest = max(largest, float(np.abs(error).max()))
        yield BiasCorrection(tuple(corrected), tuple(skipped), largest, len(data))
    finally:
        for variable, value in reversed(saved):
            variable.assign(value)
