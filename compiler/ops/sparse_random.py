"""`sparse_random` (o_c3): fixed random sparse channel connectivity (Changpinyo et al. 2017).

Each output channel is connected to a fixed random subset of keep = ceil(ratio * cin) input channels (ratio =
connection density, default 0.5; `seed` fixes the pattern, which is drawn when the graph is built so estimates and
the applied model agree). The layer becomes a `MaskedConv2D` whose kernel is multiplied by the 0/1 mask, so the
dropped connections stay zero through fine-tuning. Initialisation: the trained kernel on the kept connections,
then (refit=True, the default; needs calibration data) a per-output-channel least-squares refit of the kept
weights on the layer's input patches against the original pre-activation outputs (AMC-style).
Stored weights: kh*kw*keep*cout + cout. A conv with a single input channel is rejected (nothing to drop).
TFLite / S: S (Eq. 11) counts only the kept weights (a sparse encoding, index overhead not counted); the
.tflite file produced by the standard converter stores the kernel densely, zeros included.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import (Built, Operator, OperatorConfig, conv_geometry, conv_kwargs, kernel_and_bias,
                                    register)
from hgen.compiler.ops.errors import OperatorError
from hgen.compiler.ops.fitting import masked_lstsq, patches, sample_rows
from hgen.compiler.ops.layers import MaskedConv2D


class SparseRandomConfig(OperatorConfig):
    ratio: float = Field(0.5, gt=0.0, le=1.0, title="Share of input channels each output channel keeps")
    seed: int = Field(0, ge=0, title="Seed of the random connectivity")
    refit: bool = Field(True, title="Least-squares refit of the kept weights on calibration data")


def connectivity(layer: Any, config: SparseRandomConfig, operator: str) -> np.ndarray:
    """The fixed [cin, cout] 0/1 channel connectivity (each column has exactly `keep` ones)."""
    g = conv_geometry(layer, operator)
    if g.cin < 2:
        raise OperatorError(layer.name, operator, "the conv has 1 input channel: no channel connection can be dropped")
    keep = max(1, math.ceil(config.ratio * g.cin - 1e-9))
    rng = np.random.default_rng(config.seed)
    mask = np.zeros((g.cin, g.cout), dtype=bool)
    for j in range(g.cout):
        mask[rng.choice(g.cin, keep, replace=False), j] = True
    return mask


@register
class SparseRandom(Operator):
    name = "sparse_random"
    family = "sparse_random"
    paper_id = "o_c3"
    layer_types = frozenset({"Conv2D"})
    config_type = SparseRandomConfig

    def check(self, layer: Any, config: SparseRandomConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        connectivity(layer, config, self.name)

    def build(self, layer: Any, config: SparseRandomConfig, x: Any) -> Built:
        conv = MaskedConv2D(layer.filters, layer.kernel_size, activation=layer.activation, use_bias=layer.use_bias,
                            name=f"{layer.name}_sparse", **conv_kwargs(layer))
        output = conv(x)
        conv.set_mask(connectivity(layer, config, self.name)[None, None])
        return Built(output, {"conv": conv})

    def initialise(self, layer: Any, config: SparseRandomConfig, built: Built, data: Any) -> None:
        conv = built.layers["conv"]
        kernel, bias = kernel_and_bias(layer)
        mask = np.asarray(conv.sparsity_mask) > 0
        kernel = kernel * mask
        if config.refit:
            features = patches(data.inputs, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
            targets = data.targets.reshape(-1, layer.filters)
            rows = sample_rows(targets.shape[0], seed=config.seed)
            flat, bias = masked_lstsq(features[rows], targets[rows], mask.reshape(-1, layer.filters),
                                      bias=layer.use_bias)
            kernel = flat.reshape(kernel.shape)
        conv.kernel.assign(kernel.astype(np.float32))
        if layer.use_bias:
            conv.bias.assign(bias.astype(np.float32))
