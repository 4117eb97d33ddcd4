"""`mlpconv` (o_c5): Network-in-Network micro-network: a narrow kxk conv with ReLU, then a 1x1 conv.

Initialised so that, before any fine-tune, it reproduces the rank-r SVD truncation of the trained conv exactly:
the kxk conv holds the r SVD filters *and their negatives* (2r filters), and the 1x1 conv recombines them with
the right factors and their negatives, using relu(a) - relu(-a) = a. Fine-tuning can then use the ReLU as real
extra capacity. ratio = rank fraction of min(k*k*cin, cout) (default 0.25; hidden width 2r), or `rank`.
Parameters: 2r*(k*k*cin + 1) + 2r*cout + cout; it saves only when 2r*(k*k*cin + cout) < k*k*cin*cout, so at
high ratios it grows the layer (reported honestly by `estimate_plan`). No calibration data needed.
TFLite: two CONV_2D ops, dense weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, conv_kwargs, kernel_and_bias, register
from hgen.compiler.ops.fitting import svd_split
from hgen.compiler.ops.svd_conv import conv_rank


class MlpConvConfig(OperatorConfig):
    ratio: float = Field(0.25, gt=0.0, le=1.0, title="Rank as a fraction of min(k*k*cin, cout); hidden width 2r")
    rank: int | None = Field(None, ge=1, title="Explicit rank (overrides ratio)")


@register
class MlpConv(Operator):
    name = "mlpconv"
    family = "mlpconv"
    paper_id = "o_c5"
    layer_types = frozenset({"Conv2D"})
    config_type = MlpConvConfig

    def check(self, layer: Any, config: MlpConvConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        conv_rank(layer, config.ratio, config.rank, self.name)

    def build(self, layer: Any, config: MlpConvConfig, x: Any) -> Built:
        rank = conv_rank(layer, config.ratio, config.rank, self.name)
        narrow = keras.layers.Conv2D(2 * rank, layer.kernel_size, activation="relu", name=f"{layer.name}_mlp_kxk",
                                     **conv_kwargs(layer))
        mix = keras.layers.Conv2D(layer.filters, 1, activation=layer.activation, use_bias=layer.use_bias,
                                  name=f"{layer.name}_mlp_1x1")
        return Built(mix(narrow(x)), {"kxk": narrow, "1x1": mix})

    def initialise(self, layer: Any, config: MlpConvConfig, built: Built, data: Any) -> None:
        kernel, bias = kernel_and_bias(layer)
        rank = built.layers["kxk"].filters // 2
        a, b = svd_split(kernel.reshape(-1, kernel.shape[-1]), rank)
        narrow = np.concatenate([a, -a], axis=1).reshape(*kernel.shape[:3], 2 * rank)
        built.layers["kxk"].set_weights([narrow, np.zeros(2 * rank)])
        mix = np.concatenate([b, -b], axis=0)[None, None]
        built.layers["1x1"].set_weights([mix, bias] if layer.use_bias else [mix])
