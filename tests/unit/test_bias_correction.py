"""Empirical bias correction of int8 weight rounding (tools/bench/int8_bias_correction.py, a lever the int8
levers benchmark measures): the shift it applies re-centres the outputs of a model whose kernels are rounded to int8
on the float model's, and the model is restored afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
from int8_bias_correction import bias_corrected, quantise_per_channel


def test_quantise_per_channel_keeps_each_channels_peak_and_rounds_within_half_a_step() -> None:
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    rounded = quantise_per_channel(kernel)
    step = np.abs(kernel).reshape(-1, 5).max(axis=0) / 127
    assert np.allclose(np.abs(rounded).reshape(-1, 5).max(axis=0), step * 127)
    assert np.all(np.abs(rounded - kernel).reshape(-1, 5) <= step / 2 + 1e-6)
    levels = rounded.reshape(-1, 5) / step
    assert np.allclose(levels, np.round(levels), atol=1e-4)
    # a depthwise kernel (kh, kw, in, multiplier) has in x multiplier channels
    depthwise = np.random.default_rng(1).normal(size=(3, 3, 4, 2)).astype(np.float32)
    peaks = np.abs(quantise_per_channel(depthwise, depthwise=True)).reshape(-1, 8).max(axis=0)
    assert np.allclose(peaks, np.abs(depthwise).reshape(-1, 8).max(axis=0))


def _biased_model() -> keras.Model:
    """Conv (no bias) -> BatchNorm -> Dense (bias), each kernel has one large weight per channel, so the small
    positive ones round to 0 and, on positive inputs, the rounded model's outputs drop on average."""
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, padding="valid", use_bias=False, name="conv")
    x = keras.layers.BatchNormalization(name="norm")(conv(inputs))
    # linear end to end, and no padding (every position sums the same taps): the mean shift is removed exactly
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(4, name="dense")
    model = keras.Model(inputs, dense(x))
    kernel = np.full((3, 3, 2, 3), 0.3, np.float32)
    kernel[0, 0, 0, :] = 100.0
    conv.kernel.assign(kernel)
    weights = np.full((4 * 4 * 3, 4), 0.002, np.float32)
    weights[0, :] = 1.0
    dense.kernel.assign(weights)
    return model


def _rounded_outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's outputs with every kernel rounded as int8 stores it (then the kernels put back)."""
    layers = [model.get_layer("conv"), model.get_layer("dense")]
    saved = [layer.kernel.numpy() for layer in layers]
    try:
        for layer, value in zip(layers, saved):
            layer.kernel.assign(quantise_per_channel(value))
        return model.predict(x, verbose=0)
    finally:
        for layer, value in zip(layers, saved):
            layer.kernel.assign(value)


def test_bias_correction_recentres_the_rounded_model_and_restores_the_float_one() -> None:
    model = _biased_model()
    x = np.random.default_rng(2).uniform(0, 1, (64, 6, 6, 2)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    float_mean = model.predict(x, verbose=0).mean(axis=0)
    drift = np.abs(_rounded_outputs(model, x).mean(axis=0) - float_mean).max()
    with bias_corrected(model, x) as info:
        corrected = np.abs(_rounded_outputs(model, x).mean(axis=0) - float_mean).max()
    assert set(info.corrected) == {"conv", "dense"} and info.skipped == () and info.samples == 64
    assert drift > 0.05  # the model is biased by rounding ...
    assert corrected < drift / 100  # ... and the correction removes it
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the float model is unchanged
