"""LiteRT.js (the phone page's second engine): the `.tflite` at batch 1, float, or for an int8 bundle its twin with
uint8 input and output (LiteRT.js has no int8 tensors), which must give the device's int8 model's integers exactly
on the calibration data (else no such file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hgen.compiler.errors import CompilerError
from hgen.compiler.lowering.tflite import TFLiteModel, lower_tflite
from hgen.compiler.lowering.web import WEB_RUNTIMES, WebModel, float_tflite

WEB_TFLITE_FILE = "model.web.tflite"


@WEB_RUNTIMES.register("litert-js")
def lower_litert_js(keras_model: Any, lowered: TFLiteModel, out_dir: Path, data: np.ndarray | None) -> WebModel:
    """`model.web.tflite`: float, or uint8 I/O with the (de)quantisation the page applies for an int8 bundle."""
    if lowered.precision == "int8":
        twin = _uint8_twin(keras_model, lowered, data)
        return WebModel(twin.save(out_dir / WEB_TFLITE_FILE), "uint8", twin.input_quant, twin.output_quant)
    return WebModel(float_tflite(keras_model, lowered).save(out_dir / WEB_TFLITE_FILE))


def _uint8_twin(keras_model: Any, lowered: TFLiteModel, data: np.ndarray | None) -> TFLiteModel:
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
