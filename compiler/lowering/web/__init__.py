"""Models for phones' browsers (`android_bridge/`): the bundle's network as ONNX for onnxruntime-web (the default),
and as a float `.tflite` for LiteRT.js (the second engine). One module per browser runtime, registered by name in
`WEB_RUNTIMES` (`onnxruntime_web.py`, `litert_js.py`).

A phone runs the same H-DNN as the Raspberry Pi, so the web model comes from the same Keras model through the
same TFLite lowering, then tf2onnx, at a fixed batch of 1 (the page feeds one camera frame at a time). The ONNX
model has float input and output: an int8 bundle's ONNX is lowered from the float TFLite of the same weights.
LiteRT.js runs an int8 bundle as int8: the same quantisation with uint8 input and output (LiteRT.js has no int8
tensors), which must give the device's int8 model's integers exactly on the calibration data (else no such file);
the page quantises its float input and dequantises the logits with the parameters the manifest lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.lowering.tflite import Quant, TFLiteModel, lower_tflite
from hgen.runtime.registry import Registry

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class WebModel:
    """A written web model and its I/O: float, or uint8 with the (de)quantisation the page applies."""

    path: Path
    io_dtype: str = "float32"
    input_quant: Quant | None = None
    output_quant: Quant | None = None


# (the Keras model, the bundle's lowered model, the bundle directory, the calibration data) -> the written model
WebLowering = Callable[[Any, TFLiteModel, Path, "np.ndarray | None"], WebModel]
WEB_RUNTIMES: Registry[WebLowering] = Registry("web runtime", InvalidArgumentError, package=__name__)


def float_tflite(keras_model: keras.Model, lowered: TFLiteModel) -> TFLiteModel:
    """The float flatbuffer of the same model: reuse the bundle's when it is already float at batch 1."""
    if lowered.precision == "float32" and lowered.input_shape[0] == 1 and lowered.input_quant is None:
        return lowered
    return lower_tflite(keras_model, quantize="float")


def lower_web(keras_model: keras.Model, lowered: TFLiteModel, out_dir: Path, runtime: str = "onnxruntime-web",
              representative_data: np.ndarray | None = None) -> WebModel:
    """Write the web model of `runtime` into `out_dir` (each runtime's module says which file and I/O)."""
    return WEB_RUNTIMES.get(runtime)(keras_model, lowered, Path(out_dir), representative_data)


__all__ = ["WEB_RUNTIMES", "WebLowering", "WebModel", "float_tflite", "lower_web"]
