"""`identity`: leave the layer as it is (the search's "no compression" choice for any layer).

The layer is re-created from its config with a copy of its weights, exactly like an untouched layer. Its config
accepts only ratio = 1.0, so a plan never pretends a ratio does something here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, register
from hgen.compiler.ops.errors import OperatorError


class IdentityConfig(OperatorConfig):
    ratio: Literal[1.0] = Field(1.0, title="Always 1.0: nothing is compressed")


@register
class Identity(Operator):
    name = "identity"
    family = "identity"
    paper_id = "-"
    layer_types = frozenset()  # any layer
    config_type = IdentityConfig

    def check(self, layer: Any, config: OperatorConfig, graph: Any) -> None:
        if layer.name not in graph.layers:
            raise OperatorError(layer.name, self.name, "layer is not in the model")

    def build(self, layer: Any, config: OperatorConfig, x: Any) -> Built:
        from hgen.compiler.ops.rewrite import clone_layer, copy_weights

        clone = clone_layer(layer)
        output = clone(x)
        copy_weights(clone, layer)
        return Built(output, {"layer": clone})
