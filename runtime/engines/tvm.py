"""`tvm`: an Apache TVM library exported by the compiler, run through the relax virtual machine.

The library has no shape metadata the Python runtime can read cheaply, so the shapes and int8 parameters
come from the (signed) manifest. A library for another CPU is refused before it is handed to `dlopen`; a config
that does not match the library (shape, dtype) is an EngineError at the first run, as is an output of another shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from hgen.runtime.bundle.elf import NotElfError, elf_machine, host_machine
from hgen.runtime.bundle.errors import TargetMismatchError
from hgen.runtime.config import StrictModel
from hgen.runtime.engines.base import ENGINES, Engine, EngineError, QuantParams, TensorSpec

if TYPE_CHECKING:
    from hgen.runtime.bundle.manifest import EngineEntry, Manifest


class QuantConfig(StrictModel):
    scale: float = Field(gt=0.0)
    zero_point: int = Field(ge=-128, le=127)


class TVMConfig(StrictModel):
    input_shape: tuple[int, ...] = Field(min_length=2)
    output_shape: tuple[int, ...] = Field(min_length=1)
    precision: Literal["float32", "int8"] = "float32"
    input_quantization: QuantConfig | None = None
    output_quantization: QuantConfig | None = None
    entry: str = Field(default="main", title="relax function to call")


def _import_tvm():
    try:
        import tvm
        from tvm.runtime.vm import VirtualMachine
    except ImportError:
        raise EngineError("the tvm engine needs the TVM runtime: pip install apache-tvm==0.27.0.post1") from None
    return tvm, VirtualMachine


def check_library_machine(path: Path) -> str:
    """Refuse a library built for another CPU (cross-target bundle) with a typed error."""
    try:
        machine = elf_machine(path)
    except NotElfError:
        raise EngineError(f"tvm engine: {path} is not a shared library (ELF)") from None
    if machine != host_machine():
        raise TargetMismatchError(f"tvm library {path.name} is built for {machine}, this device is {host_machine()}")
    return machine


@ENGINES.register("tvm")
class TVMEngine(Engine):
    Config = TVMConfig

    @classmethod
    def manifest_config(cls, entry: EngineEntry, manifest: Manifest) -> dict[str, Any]:
        """The library has no shape metadata to read cheaply: shapes and int8 parameters come from the manifest."""
        return {"input_shape": manifest.input.shape, "output_shape": manifest.output_shape,
                "precision": entry.precision,
                "input_quantization": entry.input_quantization and entry.input_quantization.model_dump(),
                "output_quantization": entry.output_quantization and entry.output_quantization.model_dump()}

    def __init__(self, model_path: Path | None, config: TVMConfig) -> None:
        if model_path is None or not model_path.is_file():
            raise EngineError(f"tvm engine: library {model_path} does not exist")
        _check_quantization(config)
        check_library_machine(model_path)
        tvm, virtual_machine = _import_tvm()
        try:
            library = tvm.runtime.load_module(str(model_path))
            self._vm = virtual_machine(library, tvm.cpu())
            self._main = self._vm[config.entry]
        except Exception as exc:  # TVM raises its own error types from C++
            raise EngineError(f"tvm engine cannot load {model_path}: {exc}") from None
        self._tensor = tvm.runtime.tensor
        self._device = tvm.cpu()
        self.precision = config.precision
        self.input_quant = QuantParams(**config.input_quantization.model_dump()) if config.input_quantization else None
        self.output_quant = QuantParams(**config.output_quantization.model_dump()) if config.output_quantization else None
        self.input_spec = TensorSpec(tuple(config.input_shape))
        self.output_spec = TensorSpec(tuple(config.output_shape))

    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        feed = self.input_quant.quantize(batch) if self.input_quant else np.ascontiguousarray(batch)
        try:
            out = self._main(self._tensor(feed, self._device))
        except Exception as exc:  # TVM's C++ checks raise RuntimeError/ValueError naming its own internals
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"tvm engine: the library refused a {feed.dtype} batch of shape {feed.shape} ({detail}): "
                              "its input shape or precision is not what the manifest/config says; rebuild the "
                              "bundle") from None
        if not hasattr(out, "numpy"):  # a tuple of outputs: the logits come first
            out = out[0]
        result = out.numpy()
        if result.shape != self.output_spec.shape:  # the logits would be misread downstream
            raise EngineError(f"tvm engine: the library returned shape {result.shape}, the manifest/config says "
                              f"{self.output_spec.shape}; rebuild the bundle")
        return self.output_quant.dequantize(result) if self.output_quant else result


def _check_quantization(config: TVMConfig) -> None:
    """int8 needs both tensors' parameters; float32 takes none (they were applied to a float library's input)."""
    given = (config.input_quantization is not None, config.output_quantization is not None)
    if config.precision == "int8" and not all(given):
        raise EngineError("tvm engine: an int8 model needs input_quantization and output_quantization")
    if config.precision == "float32" and any(given):
        raise EngineError("tvm engine: a float32 model takes no input_quantization or output_quantization; "
                          "set precision: int8 if the library is int8")
