"""The operator contract and the `OPERATORS` registry every operator module registers into.

An operator is split in two phases so that cost estimation never fits anything:
`build` wires the replacement layers into a new graph (shapes, and the *size* of any sparsity pattern, are fixed
here), and `initialise` sets their weights from the trained layer (SVD truncation, least squares on calibration
activations). `check` rejects impossible applications with an `OperatorError` before anything is built.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from hgen.compiler.errors import UnknownNameError
from hgen.compiler.ops.errors import OperatorError
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.registry import Registry

if TYPE_CHECKING:
    import keras

    from hgen.compiler.ops.rewrite import GraphView, LayerData


class OperatorConfig(StrictModel):
    """Base config: `ratio` is the operator's one compression knob; subclasses document its meaning and default."""

    ratio: float = Field(0.5, gt=0.0, le=1.0, title="Compression knob in (0, 1]")


@dataclass(frozen=True)
class Built:
    """What `Operator.build` wired into the new graph: the replacement's output and its layers by role."""

    output: Any
    layers: Mapping[str, Any] = field(default_factory=dict)


class Operator(ABC):
    """One compression operator. Subclasses set the class variables and implement `build` (+ `initialise`)."""

    name: ClassVar[str]
    family: ClassVar[str]  # the paper's name ("svd" is shared by svd_conv and svd_dense)
    paper_id: ClassVar[str]  # o_c1 .. o_c6, o_f1 .. o_f3, or "-" for identity and hgen's own (stem_stride)
    layer_types: ClassVar[frozenset[str]]  # Keras class names this operator rewrites
    config_type: ClassVar[type[OperatorConfig]] = OperatorConfig
    # False only for an operator whose `check` proves every later layer takes its new output shape (stem_stride);
    # every other replacement must keep the layer's output shape (rewrite.keep_shape).
    keeps_shape: ClassVar[bool] = True

    def config(self, ratio: float | None = None, options: Mapping[str, Any] | None = None,
               layer: str = "?") -> OperatorConfig:
        """Parse `ratio` + options strictly into this operator's typed config (defaults where omitted)."""
        data = dict(options or {})
        if ratio is not None:
            data["ratio"] = ratio
        try:
            return parse_config(self.config_type, data, source=f"{self.name} config", error=ValueError)
        except ValueError as exc:
            raise OperatorError(layer, self.name, str(exc)) from None

    def check(self, layer: keras.layers.Layer, config: OperatorConfig, graph: GraphView) -> None:
        """Raise `OperatorError` if this operator cannot rewrite `layer`; the default checks the layer type."""
        kind = type(layer).__name__
        if kind not in self.layer_types:
            raise OperatorError(layer.name, self.name,
                                f"applies to {', '.join(sorted(self.layer_types))} layers, not {kind}")

    def absorbed(self, layer: keras.layers.Layer, graph: GraphView) -> tuple[str, ...]:
        """Upstream layers this rewrite removes as well (only `gap` removes any)."""
        return ()

    def input_layer(self, layer: keras.layers.Layer, graph: GraphView) -> str:
        """The layer whose input feeds the replacement: the layer itself unless layers are absorbed."""
        return layer.name

    @abstractmethod
    def build(self, layer: keras.layers.Layer, config: OperatorConfig, x: Any) -> Built:
        """Create the replacement layers, call them on the new graph's tensor `x`, return the output tensor."""

    def initialise(self, layer: keras.layers.Layer, config: OperatorConfig, built: Built, data: LayerData) -> None:
        """Set the replacement's weights from the trained layer (the default: nothing to set)."""


OPERATORS: Registry[Operator] = Registry("compression operator", UnknownNameError, package="hgen.compiler.ops")


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: register one instance of the operator under `cls.name`."""
    OPERATORS.add(cls.name, cls())
    return cls


# ---- helpers shared by the conv operators -------------------------------------------------------------------


@dataclass(frozen=True)
class ConvGeometry:
    """A Conv2D's shape facts, checked once."""

    kh: int
    kw: int
    cin: int
    cout: int

    @property
    def patch(self) -> int:
        return self.kh * self.kw * self.cin


def conv_geometry(layer: Any, operator: str) -> ConvGeometry:
    """Shape of a plain Conv2D; grouped and channels_first convs are rejected with a typed error."""
    if getattr(layer, "groups", 1) != 1:
        raise OperatorError(layer.name, operator, f"grouped convolution (groups={layer.groups}) is not supported")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise OperatorError(layer.name, operator, "only channels_last convolutions are supported")
    kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
    return ConvGeometry(kh, kw, cin, cout)


def rank_from(ratio: float, full: int, rank: int | None, layer: str, operator: str) -> int:
    """Rank = `rank` if given (must be <= full) else ceil(ratio * full), at least 1."""
    if rank is not None:
        if rank < 1 or rank > full:
            raise OperatorError(layer, operator, f"rank {rank} is outside 1..{full} for this layer")
        return rank
    return max(1, min(full, math.ceil(ratio * full - 1e-9)))


def conv_kwargs(layer: Any) -> dict[str, Any]:
    """Stride, padding and dilation of a conv, to keep the replacement's output geometry identical."""
    return {"strides": layer.strides, "padding": layer.padding, "dilation_rate": layer.dilation_rate}


def kernel_and_bias(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """The trained kernel and bias (zeros if the layer has no bias), as float64 for the factorisations."""
    kernel = np.asarray(layer.kernel, dtype=np.float64)
    bias = np.asarray(layer.bias, dtype=np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
    return kernel, bias
