"""`svd_dense` (o_f2, the paper's fc "svd"): W [din, dout] ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T) as two Dense layers.

The paper names both low-rank operators "svd"; here the fc one is `svd_dense` and the conv one `svd_conv`, and the
policies resolve "svd" by layer type. ratio = rank fraction: r = ceil(ratio * min(din, dout)) (default 0.25), or
an explicit `rank`. Parameters go from din*dout + dout to r*(din + dout) + dout; it saves only when
r < din*dout / (din + dout). Initialised by truncated SVD of the trained kernel (exact at full rank, the best
rank-r approximation otherwise); no calibration data needed. TFLite: two FULLY_CONNECTED ops, dense weights.
"""

from __future__ import annotations

from typing import Any

import keras
from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, kernel_and_bias, rank_from, register
from hgen.compiler.ops.fitting import svd_split


class SvdDenseConfig(OperatorConfig):
    ratio: float = Field(0.25, gt=0.0, le=1.0, title="Rank as a fraction of min(din, dout)")
    rank: int | None = Field(None, ge=1, title="Explicit rank (overrides ratio; must be <= min(din, dout))")


def dense_rank(layer: Any, config: SvdDenseConfig, operator: str) -> int:
    din, dout = (int(d) for d in layer.kernel.shape)
    return rank_from(config.ratio, min(din, dout), config.rank, layer.name, operator)


@register
class SvdDense(Operator):
    name = "svd_dense"
    family = "svd"
    paper_id = "o_f2"
    layer_types = frozenset({"Dense"})
    config_type = SvdDenseConfig

    def check(self, layer: Any, config: SvdDenseConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        dense_rank(layer, config, self.name)

    def build(self, layer: Any, config: SvdDenseConfig, x: Any) -> Built:
        rank = dense_rank(layer, config, self.name)
        first = keras.layers.Dense(rank, use_bias=False, name=f"{layer.name}_svd_u")
        second = keras.layers.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                                    name=f"{layer.name}_svd_v")
        return Built(second(first(x)), {"u": first, "v": second})

    def initialise(self, layer: Any, config: SvdDenseConfig, built: Built, data: Any) -> None:
        kernel, bias = kernel_and_bias(layer)
        u, v = svd_split(kernel, built.layers["u"].units)
        built.layers["u"].set_weights([u])
        built.layers["v"].set_weights([v, bias] if layer.use_bias else [v])
