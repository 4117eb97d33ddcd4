"""`svd_conv` (o_c6, the paper's conv "svd"): kxk conv with r filters, then a 1x1 conv to the output channels.

The kernel reshaped to a matrix W [k*k*cin, cout] is factorised by truncated SVD: the kxk conv (same stride,
padding and dilation as the original, no bias, linear) holds U_r sqrt(S_r) and the 1x1 conv holds sqrt(S_r) V_r^T
plus the bias and the original activation. Exact at full rank r = min(k*k*cin, cout). ratio = rank fraction of
min(k*k*cin, cout) (default 0.5) or an explicit `rank`; parameters go from k*k*cin*cout to r*(k*k*cin + cout).
No calibration data needed. TFLite: two CONV_2D ops, dense weights. Grouped convs are rejected.
"""

from __future__ import annotations

from typing import Any

import keras
from pydantic import Field

from hgen.compiler.ops.base import (Built, Operator, OperatorConfig, conv_geometry, conv_kwargs, kernel_and_bias,
                                    rank_from, register)
from hgen.compiler.ops.fitting import svd_split


class SvdConvConfig(OperatorConfig):
    ratio: float = Field(0.5, gt=0.0, le=1.0, title="Rank as a fraction of min(k*k*cin, cout)")
    rank: int | None = Field(None, ge=1, title="Explicit rank (overrides ratio; must be <= min(k*k*cin, cout))")


def conv_rank(layer: Any, ratio: float, rank: int | None, operator: str) -> int:
    geometry = conv_geometry(layer, operator)
    return rank_from(ratio, min(geometry.patch, geometry.cout), rank, layer.name, operator)


@register
class SvdConv(Operator):
    name = "svd_conv"
    family = "svd"
    paper_id = "o_c6"
    layer_types = frozenset({"Conv2D"})
    config_type = SvdConvConfig

    def check(self, layer: Any, config: SvdConvConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        conv_rank(layer, config.ratio, config.rank, self.name)

    def build(self, layer: Any, config: SvdConvConfig, x: Any) -> Built:
        rank = conv_rank(layer, config.ratio, config.rank, self.name)
        basis = keras.layers.Conv2D(rank, layer.kernel_size, use_bias=False, name=f"{layer.name}_svd_kxk",
                                    **conv_kwargs(layer))
        mix = keras.layers.Conv2D(layer.filters, 1, activation=layer.activation, use_bias=layer.use_bias,
                                  name=f"{layer.name}_svd_1x1")
        return Built(mix(basis(x)), {"kxk": basis, "1x1": mix})

    def initialise(self, layer: Any, config: SvdConvConfig, built: Built, data: Any) -> None:
        kernel, bias = kernel_and_bias(layer)
        rank = built.layers["kxk"].filters
        a, b = svd_split(kernel.reshape(-1, kernel.shape[-1]), rank)
        built.layers["kxk"].set_weights([a.reshape(*kernel.shape[:3], rank)])
        mix = b.reshape(1, 1, rank, -1)
        built.layers["1x1"].set_weights([mix, bias] if layer.use_bias else [mix])
