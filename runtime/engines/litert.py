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


def _quant(detail: dict) -> QuantParams | None:
    if np.dtype(detail["dtype"]) != np.int8:
        return None
    scale, zero_point = detail["quantization"]
    return QuantParams(float(scale), int(zero_point))


@ENGINES.register("litert")
class LiteRTEngine(Engine):
    Config = LiteRTConfig

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
        (self._input,) = self.interpreter.get_input_details()
        (self._output,) = self.interpreter.get_output_details()
        self._in_quant = _quant(self._input)
        self._out_quant = _quant(self._output)
        self.input_spec = TensorSpec(tuple(int(d) for d in self._input["shape"]))
        self.output_spec = TensorSpec(tuple(int(d) for d in self._output["shape"]))
        self.precision = "int8" if self._in_quant else "float32"

    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        feed = self._in_quant.quantize(batch) if self._in_quant else batch
        self.interpreter.set_tensor(self._input["index"], feed)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        return self._out_quant.dequantize(out) if self._out_quant else out.copy()


def _builtin_without_default_delegates():
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        from tflite_runtime.interpreter import OpResolverType  # type: ignore[no-redef]
    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
