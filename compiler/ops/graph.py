"""A read-only view of a Keras 3 model's layer graph: topological order, producers and consumers per layer.

Sequential models are read through the functional graph Keras builds for them once they have an input shape;
subclassed models and layers called more than once (shared layers) cannot be rebuilt layer by layer and are
rejected with a `RewriteError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hgen.compiler.ops.errors import RewriteError


def functional_view(model: Any) -> Any:
    """The functional graph behind `model` (a Functional model is its own)."""
    import keras

    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise RewriteError(f"Sequential model '{model.name}' has no input shape; start it with keras.Input")
        return graph
    if not hasattr(model, "_nodes_by_depth"):
        raise RewriteError(f"model '{model.name}' is subclassed; only Functional and Sequential models can be "
                           "rewritten layer by layer")
    return model


def nodes_in_order(graph: Any) -> list[Any]:
    """The graph's nodes from the inputs to the outputs (Keras stores them by depth, outputs at depth 0)."""
    by_depth = graph._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


@dataclass(frozen=True)
class GraphView:
    """Layers of one model, in topological order, with their producers and consumers (by layer name)."""

    order: tuple[str, ...]
    layers: Mapping[str, Any]
    inbound: Mapping[str, tuple[str, ...]]
    outbound: Mapping[str, tuple[str, ...]]
    input_tensor: Mapping[str, Any]  # each non-input layer's (first) input tensor in the original graph
    output_layers: frozenset[str]

    @classmethod
    def of(cls, model: Any) -> GraphView:
        graph = functional_view(model)
        order: list[str] = []
        layers: dict[str, Any] = {}
        inbound: dict[str, tuple[str, ...]] = {}
        inputs: dict[str, Any] = {}
        for node in nodes_in_order(graph):
            layer = node.operation
            if layer.name in layers:
                raise RewriteError(f"layer '{layer.name}' is called more than once (shared layers are not supported)")
            order.append(layer.name)
            layers[layer.name] = layer
            inbound[layer.name] = tuple(t._keras_history.operation.name for t in node.input_tensors)
            if node.input_tensors:
                inputs[layer.name] = node.input_tensors[0]
        outbound: dict[str, list[str]] = {name: [] for name in order}
        for name, producers in inbound.items():
            for producer in producers:
                outbound[producer].append(name)
        outputs = frozenset(t._keras_history.operation.name for t in graph.outputs)
        return cls(tuple(order), layers, inbound, {k: tuple(v) for k, v in outbound.items()}, inputs, outputs)

    def kind(self, name: str) -> str:
        return type(self.layers[name]).__name__
