"""`depthwise_separable` (o_c2): depthwise kxk + pointwise 1x1 (MobileNet), initialised per input channel by SVD.

For each input channel c the kernel slice W[:, :, c, :] is a (k*k) x cout matrix; its rank-m SVD gives m depthwise
kernels (the left factors) and the matching rows of the 1x1 conv (the right factors). So the rewrite is the best
approximation of the trained conv in this form, and exact when m = min(k*k, cout). ratio = per-channel rank
fraction, m = ceil(ratio * min(k*k, cout)) (default 0.04: m = 1, MobileNet's depth multiplier, for any k*k <= 25),
or an explicit `depth_multiplier`. Parameters: k*k*cin*m + cin*m*cout + cout (vs k*k*cin*cout + cout).
Stride, padding and dilation live on the depthwise conv. No calibration data needed.
TFLite: DEPTHWISE_CONV_2D + CONV_2D, dense weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import (Built, Operator, OperatorConfig, conv_geometry, conv_kwargs, kernel_and_bias,
                                    rank_from, register)
from hgen.compiler.ops.fitting import svd_split


class DepthwiseSeparableConfig(OperatorConfig):
    ratio: float = Field(0.04, gt=0.0, le=1.0, title="Per-input-channel rank as a fraction of min(k*k, cout)")
    depth_multiplier: int | None = Field(None, ge=1, title="Explicit depthwise multiplier (overrides ratio)")


def multiplier(layer: Any, config: DepthwiseSeparableConfig, operator: str) -> int:
    g = conv_geometry(layer, operator)
    return rank_from(config.ratio, min(g.kh * g.kw, g.cout), config.depth_multiplier, layer.name, operator)


def per_channel_svd(kernel: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """kernel [kh, kw, cin, cout] -> depthwise [kh, kw, cin, m] and pointwise [cin * m, cout] (channel c*m + j)."""
    kh, kw, cin, cout = kernel.shape
    depthwise = np.zeros((kh, kw, cin, m))
    pointwise = np.zeros((cin * m, cout))
    for c in range(cin):
        left, right = svd_split(kernel[:, :, c, :].reshape(kh * kw, cout), m)
        depthwise[:, :, c, :] = left.reshape(kh, kw, m)
        pointwise[c * m:(c + 1) * m] = right
    return depthwise, pointwise


@register
class DepthwiseSeparable(Operator):
    name = "depthwise_separable"
    family = "depthwise_separable"
    paper_id = "o_c2"
    layer_types = frozenset({"Conv2D"})
    config_type = DepthwiseSeparableConfig

    def check(self, layer: Any, config: DepthwiseSeparableConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        multiplier(layer, config, self.name)

    def build(self, layer: Any, config: DepthwiseSeparableConfig, x: Any) -> Built:
        m = multiplier(layer, config, self.name)
        depthwise = keras.layers.DepthwiseConv2D(layer.kernel_size, depth_multiplier=m, use_bias=False,
                                                 name=f"{layer.name}_dw", **conv_kwargs(layer))
        pointwise = keras.layers.Conv2D(layer.filters, 1, activation=layer.activation, use_bias=layer.use_bias,
                                        name=f"{layer.name}_pw")
        return Built(pointwise(depthwise(x)), {"depthwise": depthwise, "pointwise": pointwise})

    def initialise(self, layer: Any, config: DepthwiseSeparableConfig, built: Built, data: Any) -> None:
        kernel, bias = kernel_and_bias(layer)
        depthwise, pointwise = per_channel_svd(kernel, int(built.layers["depthwise"].depth_multiplier))
        built.layers["depthwise"].set_weights([depthwise])
        point = pointwise[None, None]
        built.layers["pointwise"].set_weights([point, bias] if layer.use_bias else [point])
