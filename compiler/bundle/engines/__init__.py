"""What each device engine of a bundle is lowered to: one module per engine (`litert.py`, `tvm.py`), registered by
name in `BUNDLE_ENGINES`, the same names the device opens them by (`hgen.runtime.engines`).

Every engine starts from the bundle's TFLite model (written once, as `model.<precision>.tflite`); an engine writes
what else it needs and returns its manifest entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hgen.compiler.bundle.files import file_fields
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.lowering.tflite import TFLiteModel
from hgen.runtime.bundle.manifest import EngineEntry, Quantization
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class EngineJob:
    """What every engine's lowering starts from."""

    tflite: TFLiteModel
    tflite_path: Path  # the bundle's TFLite file, already written
    target: str
    out_dir: Path


@dataclass(frozen=True)
class LoweredEngine:
    """An engine's manifest entry, and notes for the user (e.g. a cross target left unlinked)."""

    entry: EngineEntry
    messages: tuple[str, ...] = ()


EngineLowering = Callable[[EngineJob], LoweredEngine]
BUNDLE_ENGINES: Registry[EngineLowering] = Registry("bundle engine", InvalidArgumentError, package=__name__)


def lower_engines(engines: Sequence[str], job: EngineJob) -> list[LoweredEngine]:
    """Each named engine's lowering (`BUNDLE_ENGINES.check_choice` vets the names before any work)."""
    return [BUNDLE_ENGINES.get(name)(job) for name in engines]


def engine_entry(name: str, path: Path, tflite: TFLiteModel,
                 file_format: Literal["tflite", "shared-library", "object-archive"] = "tflite",
                 machine: str | None = None) -> EngineEntry:
    """The manifest entry of `path`, the engine's file lowered from `tflite` (a compiled library says its format
    and machine)."""
    return EngineEntry(name=name, **file_fields(path), precision=tflite.precision, format=file_format, machine=machine,
                       input_quantization=_quantization(tflite.input_quant),
                       output_quantization=_quantization(tflite.output_quant))


def _quantization(quant: Any) -> Quantization | None:
    return None if quant is None else Quantization(scale=quant.scale, zero_point=quant.zero_point)


__all__ = ["BUNDLE_ENGINES", "EngineJob", "EngineLowering", "LoweredEngine", "engine_entry", "lower_engines"]
