"""`stem_stride` (hgen's own, not one of the paper's nine): the first convolution strides `factor` times further.

Why: on a MobileNet-style backbone at camera resolution the activations, not the weights, dominate S (Eq. 11):
MobileNetV2 0.35 at 96x96x3 stores 1.25 M activations against 0.41 M weights, and no per-layer operator of the
paper touches them, so "S at least 2x below the origin" is out of reach on paper. Striding the stem is MobileNet's
resolution multiplier inside the graph: every later feature map shrinks by `factor` per side (activations and
MACs by ~factor^2) while the bundle's input spec and preprocessing stay as they are. It costs detail, which matters
least where the field's images carry little of it (low resolution, blur); the search weighs that against S and E.

Where it applies (`check`, each failure a typed `OperatorError`): a Conv2D fed by the model's only input through
nothing but Rescaling / Normalization (the stem, so every path runs through it); every later layer must accept
the smaller maps (shapes propagated with `compute_output_shape`, no weights built): a layer with weights sees the
same channels (a Dense after a Flatten would not), no map shrinks to nothing, and the model's outputs keep their
shapes (a detector's grid would change, so detectors are refused). The kernel and bias are copied unchanged.
Not additive with the other operators: on a strided model their savings shrink ~factor^2 (search/budget.py says
what that means for the action mask). TFLite: one CONV_2D with the larger stride.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, conv_geometry, kernel_and_bias, register
from hgen.compiler.ops.errors import OperatorError

STEM_PREFIX = frozenset({"InputLayer", "Rescaling", "Normalization"})


class StemStrideConfig(OperatorConfig):
    ratio: Literal[1.0] = Field(1.0, title="Unused (the knob is `factor`); always 1.0")
    factor: int = Field(2, ge=2, le=4, title="How many times further the stem strides (per side)")


def _shape(tensor: Any) -> tuple[Any, ...]:
    return tuple(tensor.shape)


@register
class StemStride(Operator):
    name = "stem_stride"
    family = "stem_stride"
    paper_id = "-"
    layer_types = frozenset({"Conv2D"})
    config_type = StemStrideConfig
    keeps_shape = False

    def check(self, layer: Any, config: StemStrideConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        conv_geometry(layer, self.name)
        self._check_stem(layer, graph)
        self._check_downstream(layer, config, graph)

    def _check_stem(self, layer: Any, graph: Any) -> None:
        """Only Rescaling / Normalization between the model's single input and this conv, each read once."""
        name = layer.name
        while graph.kind(name) != "InputLayer":
            producers = graph.inbound[name]
            if len(producers) != 1:
                raise OperatorError(layer.name, self.name, f"'{name}' has {len(producers)} inputs; the stem "
                                    "conv must be fed by the model's single input")
            name = producers[0]
            if graph.kind(name) not in STEM_PREFIX:
                raise OperatorError(layer.name, self.name, f"not the stem: {graph.kind(name)} '{name}' comes "
                                    "before it (only Rescaling / Normalization may)")
            if len(graph.outbound[name]) != 1:
                raise OperatorError(layer.name, self.name, f"'{name}' is read elsewhere too, so not every path "
                                    "runs through this conv")

    def _check_downstream(self, layer: Any, config: StemStrideConfig, graph: Any) -> None:
        """Propagate the smaller maps through every later layer; refuse what would break weights or outputs."""
        shapes: dict[str, tuple[Any, ...]] = {}
        start = graph.order.index(layer.name)
        for name in graph.order[:start]:
            shapes[name] = _shape(graph.layers[name].output)
        shapes[layer.name] = self._strided(layer, config).compute_output_shape(_shape(graph.input_tensor[layer.name]))
        for name in graph.order[start + 1:]:
            shapes[name] = self._propagate(layer, graph, name, shapes)
        for name in graph.output_layers:
            if shapes[name] != _shape(graph.layers[name].output):
                raise OperatorError(layer.name, self.name, f"the model's output '{name}' would change from "
                                    f"{_shape(graph.layers[name].output)} to {shapes[name]}")

    def _propagate(self, layer: Any, graph: Any, name: str, shapes: dict[str, tuple[Any, ...]]) -> tuple[Any, ...]:
        current = graph.layers[name]
        inputs = [shapes[producer] for producer in graph.inbound[name]]
        if current.weights:
            old = _shape(graph.input_tensor[name])
            new = inputs[0]
            if len(old) != len(new) or (len(old) != 4 and old != new) or old[-1] != new[-1]:
                raise OperatorError(layer.name, self.name, f"{graph.kind(name)} '{name}' was built for inputs "
                                    f"{old} and would get {new}")
        try:
            out = tuple(current.compute_output_shape(inputs[0] if len(inputs) == 1 else inputs))
        except Exception as exc:  # noqa: BLE001 - Keras raises ValueError / TypeError / NotImplementedError
            raise OperatorError(layer.name, self.name, f"{graph.kind(name)} '{name}' cannot take the smaller "
                                f"maps {inputs}: {exc}") from None
        if any(d is not None and d <= 0 for d in out[1:]):
            raise OperatorError(layer.name, self.name, f"{graph.kind(name)} '{name}' would output {out}: the "
                                "maps shrink to nothing")
        return out

    @staticmethod
    def _strided(layer: Any, config: StemStrideConfig) -> Any:
        strides = tuple(int(s) * config.factor for s in layer.strides)
        return type(layer).from_config({**layer.get_config(), "strides": strides, "name": f"{layer.name}_stride"})

    def build(self, layer: Any, config: StemStrideConfig, x: Any) -> Built:
        conv = self._strided(layer, config)
        return Built(conv(x), {"conv": conv})

    def initialise(self, layer: Any, config: OperatorConfig, built: Built, data: Any) -> None:
        kernel, bias = kernel_and_bias(layer)
        conv = built.layers["conv"]
        conv.set_weights([kernel, bias] if layer.use_bias else [kernel])

