"""`fire` (o_c4): SqueezeNet Fire module: squeeze 1x1 (s filters, ReLU) -> [expand 1x1 | expand kxk] concatenated.

SqueezeNet's 3x3 expand is generalised to the replaced conv's kxk, stride, padding and dilation, and the 1x1
expand gets the same stride (after cropping for "valid" padding), so output shapes are unchanged. The first
e1 = cout - e3 output channels come from the 1x1 expand and the last e3 = round(expand_kxk_fraction * cout)
from the kxk expand (the channel order is kept; downstream layers are untouched).
ratio = squeeze ratio s / cout (SqueezeNet's SR; default 0.25), s capped at cin.
Initialisation (needs calibration data): the squeeze holds the top-s principal directions of the layer's input
channels, with a bias that keeps every calibration value positive (so its ReLU is linear there); both expands
are least-squares fits from the squeezed features to the original conv's pre-activation outputs.
Not exact: the 1x1 half loses the spatial kernel. TFLite: CONV_2D x3 (+ slicing for the crop) + CONCATENATION.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, conv_geometry, conv_kwargs, register
from hgen.compiler.ops.errors import OperatorError
from hgen.compiler.ops.fitting import lstsq, patches, sample_rows


class FireConfig(OperatorConfig):
    ratio: float = Field(0.25, gt=0.0, le=1.0, title="Squeeze ratio s / cout (s capped at cin)")
    expand_kxk_fraction: float = Field(0.5, gt=0.0, lt=1.0, title="Share of output channels from the kxk expand")
    seed: int = Field(0, ge=0, title="Seed of the row subsampling in the fits")


def widths(layer: Any, config: FireConfig, operator: str) -> tuple[int, int, int]:
    """(s, e1, e3) for this layer."""
    g = conv_geometry(layer, operator)
    if g.cout < 2:
        raise OperatorError(layer.name, operator, "needs >= 2 output channels to split between the expands")
    squeeze = max(1, min(g.cin, math.ceil(config.ratio * g.cout - 1e-9)))
    e3 = min(g.cout - 1, max(1, round(config.expand_kxk_fraction * g.cout)))
    return squeeze, g.cout - e3, e3


def valid_crop(layer: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """What a 'valid' kxk conv loses at the borders, so the 1x1 expand sees the same centres."""
    total = [d * (k - 1) for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    return (total[0] // 2, total[0] - total[0] // 2), (total[1] // 2, total[1] - total[1] // 2)


@register
class Fire(Operator):
    name = "fire"
    family = "fire"
    paper_id = "o_c4"
    layer_types = frozenset({"Conv2D"})
    config_type = FireConfig

    def check(self, layer: Any, config: FireConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        widths(layer, config, self.name)

    def build(self, layer: Any, config: FireConfig, x: Any) -> Built:
        s, e1, e3 = widths(layer, config, self.name)
        squeeze = keras.layers.Conv2D(s, 1, activation="relu", name=f"{layer.name}_squeeze")
        z = squeeze(x)
        built: dict[str, Any] = {"squeeze": squeeze}
        centre = z
        if layer.padding == "valid" and any(k > 1 for k in layer.kernel_size):
            built["crop"] = keras.layers.Cropping2D(valid_crop(layer), name=f"{layer.name}_crop")
            centre = built["crop"](z)
        built["expand_1x1"] = keras.layers.Conv2D(e1, 1, strides=layer.strides, padding=layer.padding,
                                                  activation=layer.activation, use_bias=layer.use_bias,
                                                  name=f"{layer.name}_expand_1x1")
        built["expand_kxk"] = keras.layers.Conv2D(e3, layer.kernel_size, activation=layer.activation,
                                                  use_bias=layer.use_bias, name=f"{layer.name}_expand_kxk",
                                                  **conv_kwargs(layer))
        built["concat"] = keras.layers.Concatenate(name=f"{layer.name}_concat")
        output = built["concat"]([built["expand_1x1"](centre), built["expand_kxk"](z)])
        return Built(output, built)

    def initialise(self, layer: Any, config: FireConfig, built: Built, data: Any) -> None:
        x = data.inputs
        squeeze = built.layers["squeeze"]
        channels = x.reshape(-1, x.shape[-1]).astype(np.float64)
        directions = principal_directions(channels, squeeze.filters)
        shift = np.maximum(0.0, -(channels @ directions).min(axis=0))
        squeeze.set_weights([directions[None, None], shift])
        z = np.asarray(squeeze(x))
        targets = data.targets.reshape(-1, layer.filters)
        rows = sample_rows(targets.shape[0], seed=config.seed)
        e1 = built.layers["expand_1x1"].filters
        centre = np.asarray(built.layers["crop"](z)) if "crop" in built.layers else z
        one = patches(centre, (1, 1), layer.strides, layer.padding)
        kxk = patches(z, layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
        _fit(built.layers["expand_1x1"], one[rows], targets[rows, :e1], layer.use_bias)
        _fit(built.layers["expand_kxk"], kxk[rows], targets[rows, e1:], layer.use_bias)


def principal_directions(channels: np.ndarray, count: int) -> np.ndarray:
    """The top `count` principal directions [cin, count]; zero columns past the data's rank (fewer rows than
    directions, e.g. a 1x1 map late in a MobileNet on a small calibration set): those squeeze channels start idle."""
    top = np.linalg.svd(channels - channels.mean(axis=0), full_matrices=False)[2][:count].T
    return np.pad(top, ((0, 0), (0, count - top.shape[1])))


def _fit(conv: Any, features: np.ndarray, targets: np.ndarray, bias: bool) -> None:
    weights, b = lstsq(features, targets, bias=bias)
    kernel = weights.reshape(tuple(conv.kernel.shape))
    conv.set_weights([kernel, b] if bias else [kernel])
