"""Models for phones' browsers (`android_bridge/`): the bundle's network as ONNX for onnxruntime-web (the default),
and as a float `.tflite` for LiteRT.js (the second engine).

A phone runs the same H-DNN as the Raspberry Pi, so the web model comes from the same Keras model through the
same TFLite lowering, then tf2onnx. Browsers get float input and output at a fixed batch of 1 (the page feeds
one camera frame at a time and its preprocessing ends in float): an int8 bundle's web model is lowered from the
float TFLite of the same weights (the phone then runs float).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering.onnx_io import export_onnx
from hgen.compiler.lowering.tflite import TFLiteModel, lower_tflite

if TYPE_CHECKING:
    import keras

WEB_RUNTIMES = ("onnxruntime-web", "litert-js")
WEB_FILE = "model.web.onnx"
WEB_TFLITE_FILE = "model.web.tflite"


def check_web_runtimes(runtimes: Sequence[str]) -> None:
    unknown = [name for name in runtimes if name not in WEB_RUNTIMES]
    if unknown or len(set(runtimes)) != len(runtimes):
        raise InvalidArgumentError(f"web runtimes must be distinct names from {WEB_RUNTIMES}, got {tuple(runtimes)}")


def _float_tflite(keras_model: keras.Model, lowered: TFLiteModel) -> TFLiteModel:
    """The float flatbuffer of the same model: reuse the bundle's when it is already float at batch 1."""
    if lowered.precision == "float32" and lowered.input_shape[0] == 1 and lowered.input_quant is None:
        return lowered
    return lower_tflite(keras_model, quantize="float")


def _check_io(path: Path, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
    """The browser page relies on one float input of the manifest's shape and one float output: prove it."""
    try:
        import onnxruntime
    except ImportError:
        raise CompilerError("checking the web model needs onnxruntime: pip install 'hgen[compiler]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type != "tensor(float)" or outputs[0].type != "tensor(float)":
        raise CompilerError(f"web model {path.name} must have one float input and one float output")
    result = session.run(None, {inputs[0].name: np.zeros(input_shape, np.float32)})[0]
    if tuple(result.shape) != tuple(output_shape):
        raise CompilerError(f"web model output shape {result.shape} != {output_shape}")


def lower_web(keras_model: keras.Model, lowered: TFLiteModel, out_dir: Path, runtime: str = "onnxruntime-web") -> Path:
    """Write the web model of `runtime` into `out_dir`: `model.web.onnx` (checked with onnxruntime) or
    `model.web.tflite` (the float flatbuffer, batch 1)."""
    check_web_runtimes((runtime,))
    source = _float_tflite(keras_model, lowered)
    if runtime == "litert-js":
        return source.save(Path(out_dir) / WEB_TFLITE_FILE)
    path = export_onnx(source.content, Path(out_dir) / WEB_FILE)
    _check_io(path, source.input_shape, source.output_shape)
    return path


__all__ = ["WEB_FILE", "WEB_RUNTIMES", "WEB_TFLITE_FILE", "check_web_runtimes", "lower_web"]
