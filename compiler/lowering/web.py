"""Models for phones' browsers (`android_bridge/`): the bundle's network as ONNX for onnxruntime-web (the default),
and as a float `.tflite` for LiteRT.js (the second engine).

A phone runs the same H-DNN as the Raspberry Pi, so the web model comes from the same Keras model through the
same TFLite lowering, then tf2onnx, at a fixed batch of 1 (the page feeds one camera frame at a time). The ONNX
model has float input and output: an int8 bundle's ONNX is lowered from the float TFLite of the same weights.
LiteRT.js runs an int8 bundle as int8: the same quantisation with uint8 input and output (LiteRT.js has no int8
tensors), which must give the device's int8 model's integers exactly on the calibration data (else no such file);
the page quantises its float input and dequantises the logits with the parameters the manifest lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering.onnx_io import export_onnx
from hgen.compiler.lowering.tflite import Quant, TFLiteModel, lower_tflite

if TYPE_CHECKING:
    import keras

WEB_RUNTIMES = ("onnxruntime-web", "litert-js")
WEB_FILE = "model.web.onnx"
WEB_TFLITE_FILE = "model.web.tflite"


@dataclass(frozen=True)
class WebModel:
    """A written web model and its I/O: float, or uint8 with the (de)quantisation the page applies."""

    path: Path
    io_dtype: str = "float32"
    input_quant: Quant | None = None
    output_quant: Quant | None = None


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


def _uint8_twin(keras_model: keras.Model, lowered: TFLiteModel, data: np.ndarray | None) -> TFLiteModel:
    """The int8 model with uint8 I/O; it must compute exactly the device model's integers (shifted by 128)."""
    if lowered.input_shape[0] != 1:
        raise CompilerError(f"LiteRT.js runs batch 1, the int8 model has batch {lowered.input_shape[0]}")
    twin = lower_tflite(keras_model, quantize="int8", representative_data=data, integer_io="uint8")
    assert data is not None  # lower_tflite refuses int8 without it
    if _integers(lowered, data) != _integers(twin, data):
        raise CompilerError("the uint8-I/O model does not reproduce the int8 model's outputs")
    return twin


def _integers(model: TFLiteModel, data: np.ndarray) -> list[list[int]]:
    """Output integers minus the zero point for each calibration sample, input quantised as the engines do."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model.content)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert model.input_quant is not None and model.output_quant is not None
    limits = np.iinfo(inp["dtype"])
    results = []
    for x in np.asarray(data, np.float32)[:100]:
        q = np.round(x / model.input_quant.scale) + model.input_quant.zero_point
        interpreter.set_tensor(inp["index"], np.clip(q, limits.min, limits.max).astype(inp["dtype"])[None])
        interpreter.invoke()
        results.append((interpreter.get_tensor(out["index"]).astype(np.int64) - model.output_quant.zero_point)
                       .reshape(-1).tolist())
    return results


def lower_web(keras_model: keras.Model, lowered: TFLiteModel, out_dir: Path, runtime: str = "onnxruntime-web",
              representative_data: np.ndarray | None = None) -> WebModel:
    """Write the web model of `runtime` into `out_dir`: `model.web.onnx` (float, checked with onnxruntime) or
    `model.web.tflite` (batch 1: float, or for an int8 bundle its uint8-I/O twin)."""
    check_web_runtimes((runtime,))
    if runtime == "litert-js" and lowered.precision == "int8":
        twin = _uint8_twin(keras_model, lowered, representative_data)
        return WebModel(twin.save(Path(out_dir) / WEB_TFLITE_FILE), "uint8", twin.input_quant, twin.output_quant)
    source = _float_tflite(keras_model, lowered)
    if runtime == "litert-js":
        return WebModel(source.save(Path(out_dir) / WEB_TFLITE_FILE))
    path = export_onnx(source.content, Path(out_dir) / WEB_FILE)
    _check_io(path, source.input_shape, source.output_shape)
    return WebModel(path)


__all__ = ["WEB_FILE", "WEB_RUNTIMES", "WEB_TFLITE_FILE", "WebModel", "check_web_runtimes", "lower_web"]
