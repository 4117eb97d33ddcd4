"""`gap` (o_f1): replace the Flatten + Dense stack feeding a Dense layer by GlobalAveragePooling2D (Network in Network).

Put `gap` on the Dense layer whose output should survive, normally the classifier (`logits`): the Flatten and
every Dense/Dropout/Activation between it and that layer are removed (plan entries on them are reported as
conflicts), and the layer becomes GlobalAveragePooling2D -> Dense(units, same activation). The new Dense is fitted
by least squares from the pooled features of the *new* model to the original layer's pre-activation outputs on
calibration data (so `apply_plan` needs `calibration_x`). `ratio` has no meaning here and must stay 1.0.
Not exact: pooling discards spatial layout, so expect an accuracy drop before fine-tuning. TFLite: MEAN +
FULLY_CONNECTED, dense weights.
"""

from __future__ import annotations

from typing import Any, Literal

import keras
import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, register
from hgen.compiler.ops.errors import OperatorError
from hgen.compiler.ops.fitting import lstsq

PASS_THROUGH = frozenset({"Dense", "Dropout", "Activation", "ReLU"})


class GapConfig(OperatorConfig):
    ratio: Literal[1.0] = Field(1.0, title="Unused (the pooled width is the conv's channel count); always 1.0")


@register
class Gap(Operator):
    name = "gap"
    family = "gap"
    paper_id = "o_f1"
    layer_types = frozenset({"Dense"})
    config_type = GapConfig

    def _chain(self, layer: Any, graph: Any) -> tuple[str, ...]:
        """Layers from the Flatten (first) up to just before `layer`; a typed error if the stack is not one."""
        chain: list[str] = []
        name = layer.name
        while True:
            producers = graph.inbound[name]
            if len(producers) != 1:
                raise OperatorError(layer.name, self.name, f"'{name}' has {len(producers)} inputs; need a "
                                    "single Flatten -> Dense chain")
            name = producers[0]
            kind = graph.kind(name)
            if len(graph.outbound[name]) != 1 or name in graph.output_layers:
                raise OperatorError(layer.name, self.name, f"'{name}' is used elsewhere; it cannot be removed")
            chain.append(name)
            if kind == "Flatten":
                break
            if kind not in PASS_THROUGH:
                raise OperatorError(layer.name, self.name, f"needs a Flatten -> Dense stack before it, found "
                                    f"{kind} '{name}'")
        if len(graph.input_tensor[name].shape) != 4:
            raise OperatorError(layer.name, self.name, "the Flatten must flatten a [batch, h, w, c] feature map")
        return tuple(reversed(chain))

    def check(self, layer: Any, config: OperatorConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        self._chain(layer, graph)

    def absorbed(self, layer: Any, graph: Any) -> tuple[str, ...]:
        return self._chain(layer, graph)

    def input_layer(self, layer: Any, graph: Any) -> str:
        return self._chain(layer, graph)[0]

    def build(self, layer: Any, config: OperatorConfig, x: Any) -> Built:
        pool = keras.layers.GlobalAveragePooling2D(name=f"{layer.name}_gap")
        dense = keras.layers.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                                   name=f"{layer.name}_gap_fc")
        return Built(dense(pool(x)), {"pool": pool, "dense": dense})

    def initialise(self, layer: Any, config: OperatorConfig, built: Built, data: Any) -> None:
        features = np.mean(data.inputs, axis=(1, 2))
        weights, bias = lstsq(features, data.targets, bias=layer.use_bias)
        built.layers["dense"].set_weights([weights, bias] if layer.use_bias else [weights])
