"""Compression plans: layer name -> (operator, ratio); the validator; and the layer-selection policies.

A plan is a small frozen pydantic object that round-trips through dict/JSON, e.g.
`{"layers": {"conv2": {"operator": "svd_conv", "ratio": 0.5}, "logits": {"operator": "gap"}}}`.
Plans always hold registered operator names (`svd_conv`/`svd_dense`, never the paper's shared "svd"); the policies
accept the paper's family names and resolve them per layer type with `resolve_operator`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from hgen.compiler.errors import UnknownNameError
from hgen.compiler.ops.base import OPERATORS, Operator, OperatorConfig
from hgen.compiler.ops.errors import OperatorError, PlanError
from hgen.compiler.ops.graph import GraphView
from hgen.runtime.config import StrictModel, parse_config

IDENTITY = "identity"
OptionValue = float | int | bool | str


class LayerChoice(StrictModel):
    """The operator chosen for one layer; `ratio=None` means the operator's documented default."""

    operator: str = Field(title="Registered operator name")
    ratio: float | None = Field(None, gt=0.0, le=1.0, title="Compression knob (None: operator default)")
    options: dict[str, OptionValue] = Field(default_factory=dict, title="Extra operator config fields")


class Plan(StrictModel):
    """Layer name -> LayerChoice. Layers not named are left alone (identity)."""

    layers: dict[str, LayerChoice] = Field(default_factory=dict, title="Per-layer operator choices")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return parse_config(cls, data, source="compression plan", error=lambda msg: PlanError(msg.splitlines()[1:]))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError([f"plan is not valid JSON: {exc}"]) from None
        if not isinstance(data, Mapping):
            raise PlanError([f"plan JSON must be an object, got {type(data).__name__}"])
        return cls.from_dict(data)

    @classmethod
    def of(cls, choices: Mapping[str, Any]) -> Plan:
        """Shorthand: `Plan.of({"conv1": "svd_conv", "fc1": ("svd_dense", 0.25), "fc2": {"operator": ...}})`."""
        return cls.from_dict({"layers": {name: _choice(value) for name, value in choices.items()}})

    def merge(self, other: Plan) -> Plan:
        """Union of two plans (e.g. a conv plan + an fc plan); a layer chosen differently by both is an error."""
        clashes = [f"layer '{name}': {self.layers[name].operator} vs {choice.operator}"
                   for name, choice in other.layers.items() if name in self.layers and self.layers[name] != choice]
        if clashes:
            raise PlanError(clashes)
        return Plan(layers={**self.layers, **other.layers})

    def describe(self) -> str:
        """Compact text, e.g. `conv1=svd_conv@0.5 conv2=svd_conv@0.5`."""
        return " ".join(f"{name}={c.operator}" + (f"@{c.ratio:g}" if c.ratio is not None else "")
                        for name, c in self.layers.items()) or "(identity)"


def _choice(value: str | tuple[str, float] | LayerChoice | Mapping[str, Any]) -> Any:
    if isinstance(value, LayerChoice):
        return value.model_dump()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        return {"operator": value}
    return {"operator": value[0], "ratio": value[1]}


@dataclass(frozen=True)
class ResolvedChoice:
    """A validated plan entry: the layer, the operator instance and its parsed config."""

    layer: Any
    operator: Operator
    config: OperatorConfig
    absorbed: tuple[str, ...]
    input_layer: str


def _resolve_entry(graph: GraphView, name: str, choice: LayerChoice) -> ResolvedChoice:
    operator = OPERATORS.get(choice.operator)
    layer = graph.layers[name]
    config = operator.config(choice.ratio, choice.options, layer=name)
    operator.check(layer, config, graph)
    return ResolvedChoice(layer, operator, config, operator.absorbed(layer, graph), operator.input_layer(layer, graph))


def validate_plan(model: Any, plan: Plan) -> list[ResolvedChoice]:
    """Check every entry of `plan` against `model`; raise one `PlanError` listing ALL problems, else resolve it.

    Returns the non-identity entries in the model's topological order.
    """
    graph = GraphView.of(model)
    problems: list[str] = []
    resolved: list[ResolvedChoice] = []
    for name, choice in plan.layers.items():
        if name not in graph.layers:
            problems.append(f"layer '{name}' is not in model '{model.name}' (layers: {', '.join(graph.order)})")
            continue
        try:
            entry = _resolve_entry(graph, name, choice)
        except (UnknownNameError, OperatorError) as exc:
            problems.append(f"layer '{name}': {exc}" if isinstance(exc, UnknownNameError) else str(exc))
            continue
        if entry.operator.name != IDENTITY:
            resolved.append(entry)
    problems += _absorption_conflicts(plan, resolved)
    if problems:
        raise PlanError(problems)
    position = {name: i for i, name in enumerate(graph.order)}
    return sorted(resolved, key=lambda entry: position[entry.layer.name])


def _absorption_conflicts(plan: Plan, resolved: list[ResolvedChoice]) -> list[str]:
    problems = []
    for entry in resolved:
        for name in entry.absorbed:
            other = plan.layers.get(name)
            if other is not None and other.operator != IDENTITY:
                problems.append(f"layer '{name}': operator '{other.operator}' conflicts with "
                                f"'{entry.operator.name}' on '{entry.layer.name}', which removes '{name}'")
    return problems


# ---- which operators fit which layer -----------------------------------------------------------------------


def operators_for(layer: Any, model: Any = None) -> list[str]:
    """Registered operators that can rewrite `layer` (always including identity).

    Without `model` only the layer type is checked; with it, each operator's full check runs at its default config
    (so e.g. `gap` appears only on a Dense fed by Flatten -> Dense chain, `sparse_random` not on 1-channel input).
    """
    graph = GraphView.of(model) if model is not None else None
    names = []
    for name, operator in OPERATORS.items():
        if name == IDENTITY or type(layer).__name__ not in operator.layer_types:
            continue
        if graph is not None and not _fits(operator, layer, graph):
            continue
        names.append(name)
    return [IDENTITY, *names]


def _fits(operator: Operator, layer: Any, graph: GraphView, choice: LayerChoice | None = None) -> bool:
    try:
        config = operator.config(choice.ratio if choice else None, choice.options if choice else None, layer.name)
        operator.check(layer, config, graph)
    except OperatorError:
        return False
    return True


def resolve_operator(name: str, layer: Any) -> str | None:
    """A registered name, or a paper family name ("svd") resolved by layer type; None if nothing fits the type."""
    kind = type(layer).__name__
    if name in OPERATORS:
        return name if kind in OPERATORS.get(name).layer_types or name == IDENTITY else None
    matches = [n for n, op in OPERATORS.items() if op.family == name and kind in op.layer_types]
    if not matches and not any(op.family == name for _, op in OPERATORS.items()):
        OPERATORS.get(name)  # raises UnknownNameError listing the valid names
    return matches[0] if matches else None


# ---- layer-selection policies --------------------------------------------------------------------------------


def _policy(model: Any, operator: str, ratio: float | None, options: Mapping[str, OptionValue] | None,
            keep: Callable[[GraphView, str], bool]) -> Plan:
    graph = GraphView.of(model)
    layers: dict[str, LayerChoice] = {}
    for name in graph.order:
        if not keep(graph, name):
            continue
        resolved = resolve_operator(operator, graph.layers[name])
        if resolved is None or resolved == IDENTITY:
            continue
        choice = LayerChoice(operator=resolved, ratio=ratio, options=dict(options or {}))
        if _fits(OPERATORS.get(resolved), graph.layers[name], graph, choice):
            layers[name] = choice
    return Plan(layers=layers)


def every_layer(model: Any, operator: str, ratio: float | None = None,
                options: Mapping[str, OptionValue] | None = None, only: Iterable[str] | None = None) -> Plan:
    """The operator on every layer it can rewrite (optionally restricted to the names in `only`).

    Layers the operator's check rejects (e.g. `sparse_random` on a 1-input-channel conv) are left out, so the
    result always validates.
    """
    allowed = set(only) if only is not None else None
    return _policy(model, operator, ratio, options, lambda g, name: allowed is None or name in allowed)


DOWNSAMPLING = frozenset({"MaxPooling2D", "AveragePooling2D"})


def first_convs_of_blocks(graph: GraphView) -> set[str]:
    """The first Conv2D of every block: after the input, after each pooling layer; a strided conv opens a block.

    A strided DepthwiseConv2D (MobileNet's downsampling) opens one too: the pointwise conv after it comes first.
    """
    first: set[str] = set()
    block_open = True
    for name in graph.order:
        kind = graph.kind(name)
        if kind in DOWNSAMPLING or (kind == "DepthwiseConv2D" and any(s > 1 for s in graph.layers[name].strides)):
            block_open = True
        elif kind == "Conv2D":
            strided = any(s > 1 for s in graph.layers[name].strides)
            if block_open or strided:
                first.add(name)
            block_open = False
    return first


def skip_first_conv_per_block(model: Any, operator: str, ratio: float | None = None,
                              options: Mapping[str, OptionValue] | None = None) -> Plan:
    """The paper's policy for deep backbones: every layer except the first conv of each block keeps its form."""
    skipped = first_convs_of_blocks(GraphView.of(model))
    return _policy(model, operator, ratio, options, lambda g, name: name not in skipped)


def explicit(choices: Mapping[str, Any]) -> Plan:
    """An explicit per-layer plan from a dict (`{"layers": {...}}` or the shorthand accepted by `Plan.of`)."""
    if "layers" in choices and isinstance(choices["layers"], Mapping):
        return Plan.from_dict(choices)
    return Plan.of(choices)
