"""The engine contract: every backend loads one model file and maps a float batch to float logits.

Engines hide precision: an int8 model is fed quantised inputs and its outputs are dequantised, so callers
(confidence, fusion) always see float32 logits. Models have a fixed batch; larger batches run in chunks.

One engine runs one batch at a time: neither the LiteRT interpreter (its input and output tensors are the
interpreter's own) nor the TVM virtual machine may be entered from two threads, and the device agent does that
(the swap thread's agreement check runs the running model while the pipeline thread does), so every engine
serialises its runs with its own lock.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.errors import HGenRuntimeError, InvalidInputError
from hgen.runtime.registry import Registry

if TYPE_CHECKING:
    from hgen.runtime.bundle.manifest import EngineEntry, Manifest


class EngineError(HGenRuntimeError):
    """An engine could not be opened (missing package, unreadable model) or failed to run."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape (batch first, fixed) and dtype a caller passes in or gets back."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def batch(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class QuantParams:
    """Affine parameters of an integer tensor (`real = (q - zero_point) * scale`); `dtype` int8, or uint8 for models
    exported with uint8 input and output (the LiteRT.js twin of an int8 bundle)."""

    scale: float
    zero_point: int
    dtype: str = "int8"

    def quantize(self, x: np.ndarray) -> np.ndarray:
        limits = np.iinfo(self.dtype)
        return np.clip(np.round(x / self.scale) + self.zero_point, limits.min, limits.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class Engine(ABC):
    """Base of all engines: subclasses set the specs and implement `_run_fixed` for one fixed-size batch."""

    Config: ClassVar[type[StrictModel]]
    specs_from_model: ClassVar[bool] = False
    """True when the specs, precision and quantization below are read from the model file (LiteRT), so the loader
    compares them with the signed manifest; False when they come from the engine's config (null) or from the
    manifest itself (tvm), where there is nothing to compare."""
    input_spec: TensorSpec
    output_spec: TensorSpec
    precision: str = "float32"
    input_quant: QuantParams | None = None
    output_quant: QuantParams | None = None
    _run_lock: threading.Lock

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Every engine gets its run lock here, whatever its own `__init__` does."""
        del args, kwargs
        engine = super().__new__(cls)
        engine._run_lock = threading.Lock()
        return engine

    @classmethod
    def manifest_config(cls, entry: EngineEntry, manifest: Manifest) -> dict[str, Any]:
        """Settings a bundle's signed manifest gives this engine, beside the caller's options (none: the model file
        says all the engine needs)."""
        del entry, manifest
        return {}

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for `batch` (N, *input_shape[1:]), float32, N any multiple of the model's batch."""
        batch = self._checked(batch)
        size = self.input_spec.batch
        with self._run_lock:  # another thread's batch would overwrite this one's tensors mid-run
            chunks = [self._run_fixed(batch[i : i + size]) for i in range(0, len(batch), size)]
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def warm_up(self, n: int = 3) -> None:
        """Run `n` zero batches so one-off costs (allocation, thread start, JIT) leave later timings."""
        zeros = np.zeros(self.input_spec.shape, np.float32)
        for _ in range(n):
            with self._run_lock:
                self._run_fixed(zeros)

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        expected = self.input_spec.shape
        if batch.ndim != len(expected) or batch.shape[1:] != expected[1:]:
            raise InvalidInputError(f"input shape {batch.shape} does not match (N, {', '.join(map(str, expected[1:]))})")
        if len(batch) == 0 or len(batch) % expected[0]:
            raise InvalidInputError(f"batch size {len(batch)} is not a positive multiple of {expected[0]}")
        if not np.issubdtype(batch.dtype, np.floating):
            raise InvalidInputError(f"input dtype {batch.dtype} is not floating point (normalise first)")
        return batch.astype(np.float32, copy=False)

    @abstractmethod
    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        """Run exactly one model batch (shape == input_spec.shape)."""


ENGINES: Registry[type[Engine]] = Registry("engine", package="hgen.runtime.engines")


def open_engine(name: str, model_path: str | Path | None, config: Mapping[str, Any] | StrictModel | None = None) -> Engine:
    """Look up `name`, validate `config` against that engine's strict schema, and load `model_path`."""
    engine_class = ENGINES.get(name)
    if not isinstance(config, StrictModel):
        config = parse_config(engine_class.Config, config, source=f"{name} engine config", error=InvalidInputError)
    return engine_class(None if model_path is None else Path(model_path), config)


def engine_names() -> list[str]:
    return ENGINES.names()
