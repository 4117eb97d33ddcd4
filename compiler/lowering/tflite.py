"""Keras -> TFLite with a fixed input shape: float32, or full-integer int8 post-training quantisation.

A fixed batch matters downstream: TVM's relax TFLite frontend cannot import the SHAPE ops a dynamic batch
emits. Int8 models take int8 in and give int8 out; the engines (de)quantise with the tensor parameters. Browsers'
LiteRT.js has no int8 tensors, so phones get the same int8 graph with uint8 input and output (`integer_io`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.runtime.quiet import quiet_conversion

if TYPE_CHECKING:
    import keras

Precision = Literal["float32", "int8"]
QUANTIZE_CHOICES = {"float": "float32", "float32": "float32", "int8": "int8"}
MIN_REPRESENTATIVE, MAX_REPRESENTATIVE = 100, 500


@dataclass(frozen=True)
class Quant:
    scale: float
    zero_point: int


@dataclass(frozen=True)
class TFLiteModel:
    """A converted flatbuffer plus the tensor facts the bundle manifest records."""

    content: bytes
    precision: Precision
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_quant: Quant | None = None
    output_quant: Quant | None = None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.content)
        return path


def precision_of(quantize: str) -> Precision:
    try:
        return QUANTIZE_CHOICES[quantize]  # type: ignore[return-value]
    except KeyError:
        raise InvalidArgumentError(f"quantize must be one of {sorted(QUANTIZE_CHOICES)}, got '{quantize}'") from None


def _tensorflow():
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        raise CompilerError("TFLite lowering needs TensorFlow: pip install 'hgen[compiler]'") from None
    return tf, keras


def fixed_batch(model: keras.Model, batch_size: int = 1) -> keras.Model:
    """Wrap `model` so its input has a static batch dimension (same weights, no copy), of the model's own input
    dtype. A free height or width is refused: LiteRT would record it as 1, and sign a bundle no frame fits."""
    _, keras = _tensorflow()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidArgumentError("lowering supports models with one input and one output")
    shape = tuple(model.inputs[0].shape[1:])
    if any(dim is None for dim in shape):
        raise InvalidArgumentError(f"model input {shape} has free dimensions; lowering needs a fixed input shape")
    inputs = keras.Input(shape=shape, batch_size=batch_size, dtype=model.inputs[0].dtype, name="image")
    return keras.Model(inputs, model(inputs), name=f"{model.name}_b{batch_size}")


def _representative(data: np.ndarray, batch_size: int) -> Iterator[list[np.ndarray]]:
    for start in range(0, len(data) - batch_size + 1, batch_size):
        yield [data[start : start + batch_size]]


def check_representative(data: np.ndarray | None, input_shape: tuple[int, ...]) -> np.ndarray:
    """100-500 samples shaped like the model input; more are cut to the first 500."""
    if data is None:
        raise InvalidArgumentError("int8 quantisation needs representative_data (100-500 training samples)")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise InvalidArgumentError(f"representative_data holds {int((~np.isfinite(data)).sum())} values that are not "
                                   "finite (NaN or infinite): int8 ranges cannot be calibrated on them")
    if data.shape[1:] != tuple(input_shape[1:]):
        raise InvalidArgumentError(f"representative_data shape {data.shape[1:]} != model input {tuple(input_shape[1:])}")
    if len(data) < MIN_REPRESENTATIVE:
        raise InvalidArgumentError(f"representative_data has {len(data)} samples; int8 calibration needs >= {MIN_REPRESENTATIVE}")
    return data[:MAX_REPRESENTATIVE]


def check_calibration_range(data: np.ndarray, scale: float, offset: float) -> None:
    """Refuse calibration images on another scale than the bundle's input, x = raw * scale + offset for raw pixels in
    0..255 (5 % slack for augmented images): raw 0..255 pixels given where the model takes [0, 1] calibrated the
    input scale to 1.0 instead of 1/255, and the signed int8 bundle answered at random."""
    low, high = sorted((offset, 255.0 * scale + offset))
    slack = 0.05 * (high - low)
    least, most = float(np.min(data)), float(np.max(data))
    if least < low - slack or most > high + slack:
        raise InvalidArgumentError(
            f"the int8 calibration images range over [{least:.4g}, {most:.4g}], but the bundle's input is raw * "
            f"{scale:.6g} + {offset:.6g}, within [{low:.4g}, {high:.4g}]: normalise them as the device will "
            "(or give the bundle's real --scale and --offset)")


def representative_sample(x: np.ndarray, y: np.ndarray, count: int = MAX_REPRESENTATIVE, seed: int = 0) -> np.ndarray:
    """Up to `count` training images (float32): `count / classes` of every class (all of a smaller class), topped up
    from the other images when small classes leave room; a seeded random pick, in data set order.

    Why stratified: int8 activation ranges are calibrated on these images only, so a class missing from them (the
    first rows of a data set sorted by class, or a rare class) would meet ranges set without it. The own-data
    benchmark's int8 agreement is measured with this selection (tools/bench/results/own_data.md)."""
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(x):
        raise InvalidArgumentError(f"representative_sample needs one class label per image, got labels {labels.shape}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, count // max(len(classes), 1))
    orders = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    picked = np.concatenate([order[:per_class] for order in orders] + [np.zeros(0, np.int64)])
    if len(picked) > count:  # more classes than images to pick: a seeded choice of classes, not the lowest ids
        picked = rng.permutation(picked)[:count]
    rest = np.concatenate([order[per_class:] for order in orders] + [np.zeros(0, np.int64)])
    rows = np.concatenate([picked, rng.permutation(rest)[:max(count - len(picked), 0)]])
    return np.asarray(x[np.sort(rows[:count]).astype(np.int64)], np.float32)


def calibration_images(split: Any, fallback: int = 200) -> np.ndarray:
    """The int8 calibration images of a training split, as `hgen-compile` and the hub's re-lowering both take them:
    `representative_sample` when the split has one class id per image, else its first `fallback` images (a
    detection split has boxes, no `y`)."""
    labels = getattr(split, "y", None)
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu"):
        return np.asarray(split.x[:fallback], np.float32)
    return representative_sample(split.x, labels)


def _read_back(content: bytes, precision: Precision) -> TFLiteModel:
    """Load the flatbuffer once to record shapes and quantisation (also proves it is loadable)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()

    def quant(detail: dict) -> Quant | None:
        scale, zero_point = detail["quantization"]
        return Quant(float(scale), int(zero_point)) if precision == "int8" else None

    return TFLiteModel(
        content, precision, tuple(int(d) for d in inp["shape"]), tuple(int(d) for d in out["shape"]), quant(inp), quant(out)
    )


def lower_tflite(
    model: keras.Model,
    *,
    quantize: str = "float",
    batch_size: int = 1,
    representative_data: np.ndarray | None = None,
    integer_io: Literal["int8", "uint8"] = "int8",
) -> TFLiteModel:
    """Convert a Keras model (logits out) to TFLite, float32 or full-int8 (its input and output `integer_io`)."""
    tf, _ = _tensorflow()
    precision = precision_of(quantize)
    fixed = fixed_batch(model, batch_size)
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if precision == "int8":
        data = check_representative(representative_data, tuple(fixed.inputs[0].shape))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(data, batch_size)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, integer_io)
    try:
        with contextlib.redirect_stdout(io.StringIO()), quiet_conversion():  # Keras prints the exported signature
            content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        raise CompilerError(f"TFLite conversion ({precision}) failed: {exc}") from None
    return _read_back(content, precision)
