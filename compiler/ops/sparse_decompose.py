"""`sparse_decompose` (o_c1): sparse convolution decomposition (Liu et al. 2015, simplified).

A small set of basis kernels per input channel (a depthwise kxk conv with depth multiplier m) followed by a sparse
1x1 combination (a `MaskedConv2D`). Initialisation: per-input-channel SVD of the trained kernel gives the m basis
kernels and a dense combination (exact when m = min(k*k, cout) and everything is kept); the combination keeps
the `keep` largest-magnitude entries per output channel, then (refit=True, default; needs calibration data) the
kept entries are refitted by least squares on the basis outputs of the new model against the original
pre-activation outputs. Liu et al.'s extra input-channel rotation is not included.
Knobs: ratio = density of the 1x1 combination, keep = ceil(ratio * cin * m) per output channel (default 0.25);
`bases` = m as a fraction of min(k*k, cout) (default 0.25). Stored weights: kh*kw*cin*m + keep*cout + cout.
TFLite / S: S (Eq. 11) counts only the kept combination weights (sparse encoding, index overhead not counted);
the .tflite file stores DEPTHWISE_CONV_2D + a CONV_2D whose 1x1 kernel is dense with zeros.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import (Built, Operator, OperatorConfig, conv_geometry, conv_kwargs, kernel_and_bias,
                                    rank_from, register)
from hgen.compiler.ops.depthwise_separable import per_channel_svd
from hgen.compiler.ops.fitting import first_k_mask, masked_lstsq, sample_rows, top_k_mask
from hgen.compiler.ops.layers import MaskedConv2D


class SparseDecomposeConfig(OperatorConfig):
    ratio: float = Field(0.25, gt=0.0, le=1.0, title="Density of the sparse 1x1 combination")
    bases: float = Field(0.25, gt=0.0, le=1.0, title="Basis kernels per input channel, fraction of min(k*k, cout)")
    refit: bool = Field(True, title="Least-squares refit of the kept combination weights on calibration data")
    seed: int = Field(0, ge=0, title="Seed of the row subsampling in the refit")


def shape_of(layer: Any, config: SparseDecomposeConfig, operator: str) -> tuple[int, int]:
    """(m bases per input channel, kept combination weights per output channel)."""
    g = conv_geometry(layer, operator)
    m = rank_from(config.bases, min(g.kh * g.kw, g.cout), None, layer.name, operator)
    return m, max(1, math.ceil(config.ratio * g.cin * m - 1e-9))


@register
class SparseDecompose(Operator):
    name = "sparse_decompose"
    family = "sparse_decompose"
    paper_id = "o_c1"
    layer_types = frozenset({"Conv2D"})
    config_type = SparseDecomposeConfig

    def check(self, layer: Any, config: SparseDecomposeConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        shape_of(layer, config, self.name)

    def build(self, layer: Any, config: SparseDecomposeConfig, x: Any) -> Built:
        m, keep = shape_of(layer, config, self.name)
        bases = keras.layers.DepthwiseConv2D(layer.kernel_size, depth_multiplier=m, use_bias=False,
                                             name=f"{layer.name}_bases", **conv_kwargs(layer))
        combine = MaskedConv2D(layer.filters, 1, activation=layer.activation, use_bias=layer.use_bias,
                               name=f"{layer.name}_combine")
        output = combine(bases(x))
        combine.set_mask(first_k_mask((int(combine.kernel.shape[2]), layer.filters), keep)[None, None])
        return Built(output, {"bases": bases, "combine": combine})

    def initialise(self, layer: Any, config: SparseDecomposeConfig, built: Built, data: Any) -> None:
        bases, combine = built.layers["bases"], built.layers["combine"]
        kernel, bias = kernel_and_bias(layer)
        depthwise, pointwise = per_channel_svd(kernel, int(bases.depth_multiplier))
        bases.set_weights([depthwise])
        mask = top_k_mask(pointwise, shape_of(layer, config, self.name)[1])
        pointwise = pointwise * mask
        if config.refit:
            features = np.asarray(bases(data.inputs))
            features = features.reshape(-1, features.shape[-1])
            targets = data.targets.reshape(-1, layer.filters)
            rows = sample_rows(targets.shape[0], seed=config.seed)
            pointwise, bias = masked_lstsq(features[rows], targets[rows], mask, bias=layer.use_bias)
        combine.set_mask(mask[None, None])
        combine.kernel.assign(pointwise[None, None].astype(np.float32))
        if layer.use_bias:
            combine.bias.assign(bias.astype(np.float32))
