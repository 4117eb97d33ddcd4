"""`litert`: TFLite models through Google's LiteRT interpreter (ai-edge-litert), else tflite-runtime.

Tested: ai-edge-litert 2.3.0 with NumPy 2.4 (Python 3.11, x86-64). tflite-runtime's last release (2.14.0,
October 2023) is built against NumPy 1.x: use it only on a device image that pins numpy<2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from hgen.runtime.config import StrictModel
from hgen.runtime.engines.base import ENGINES, Engine, EngineError, QuantParams, TensorSpec


class LiteRTConfig(StrictModel):
    num_threads: int | None = Field(default=None, ge=1, title="interpreter threads (None: LiteRT default)")
    xnnpack: bool = Field(default=True, title="use the XNNPACK CPU delegate (LiteRT default)")


def interpreter_class() -> type:
    """The first available TFLite interpreter class, with an install hint if there is none."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise EngineError(
                "the litert engine needs ai-edge-litert (pip install 'hgen[edge]'); "
                "tflite-runtime also works on NumPy < 2"
            ) from None
    return Interpreter


def _quant(detail: dict, role: str, model_path: Path) -> QuantParams | None:
    """None for a float32 tensor, the (de)quantisation of an int8 or uint8 one. Anything else is refused when the
    model is opened: a uint8 model was fed float32 and failed every frame with a raw ValueError."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return None
    if dtype not in (np.int8, np.uint8):
        raise EngineError(f"litert engine: the {role} of {model_path.name} is {dtype}; the engine feeds and reads "
                          "float32, or int8/uint8 with quantization parameters: export the model with those")
    scale, zero_point = detail["quantization"]
    if not scale > 0:
        raise EngineError(f"litert engine: the {role} of {model_path.name} is {dtype} without quantization "
                          "parameters (raw integers), so float inputs cannot be mapped to it: export the model "
                          "with a float32 input and output, or quantize it fully (hgen lower --quantize int8)")
    return QuantParams(float(scale), int(zero_point), dtype.name)


@ENGINES.register("litert")
class LiteRTEngine(Engine):
    Config = LiteRTConfig
    specs_from_model = True  # shapes, precision and int8 parameters are the model file's own

    def __init__(self, model_path: Path | None, config: LiteRTConfig) -> None:
        if model_path is None or not model_path.is_file():
            raise EngineError(f"litert engine: model file {model_path} does not exist")
        interpreter = interpreter_class()
        kwargs: dict = {"model_path": str(model_path), "num_threads": config.num_threads}
        if not config.xnnpack:
            kwargs["experimental_op_resolver_type"] = _builtin_without_default_delegates()
        try:
            self.interpreter = interpreter(**kwargs)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"litert engine cannot load {model_path}: {exc}") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"litert engine: {model_path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                              "the engine runs models with one of each")
        self._input, self._output = inputs[0], outputs[0]
        self.input_quant = _quant(self._input, "input", model_path)
        self.output_quant = _quant(self._output, "output", model_path)
        self.input_spec = TensorSpec(tuple(int(d) for d in self._input["shape"]))
        self.output_spec = TensorSpec(tuple(int(d) for d in self._output["shape"]))
        self.precision = "int8" if self.input_quant else "float32"  # uint8 I/O: an int8 graph (the LiteRT.js twin)

    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        feed = self.input_quant.quantize(batch) if self.input_quant else batch
        self.interpreter.set_tensor(self._input["index"], feed)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        return self.output_quant.dequantize(out) if self.output_quant else out.copy()


def _builtin_without_default_delegates():
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        from tflite_runtime.interpreter import OpResolverType  # type: ignore[no-redef]
    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
