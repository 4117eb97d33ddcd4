"""onnxruntime-web (the phone page's default): the float network as ONNX through tf2onnx, checked with onnxruntime
for the one float input and output the page relies on. An int8 bundle's ONNX is lowered from the float TFLite of
the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hgen.compiler.errors import CompilerError
from hgen.compiler.lowering.onnx_io import export_onnx
from hgen.compiler.lowering.tflite import TFLiteModel
from hgen.compiler.lowering.web import WEB_RUNTIMES, WebModel, float_tflite

WEB_FILE = "model.web.onnx"


@WEB_RUNTIMES.register("onnxruntime-web")
def lower_onnx(keras_model: Any, lowered: TFLiteModel, out_dir: Path, data: np.ndarray | None) -> WebModel:
    """`model.web.onnx`, float, at batch 1."""
    del data  # a float model needs no calibration
    source = float_tflite(keras_model, lowered)
    path = export_onnx(source.content, out_dir / WEB_FILE)
    _check_io(path, source.input_shape, source.output_shape)
    return WebModel(path)


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
