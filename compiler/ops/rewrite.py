"""Model surgery shared by every operator: rebuild a Keras graph layer by layer with some layers replaced.

`apply_plan` never mutates its input: untouched layers are re-created from their config and get a copy of the
trained weights; replaced layers become the operator's sub-graph, initialised in topological order. Initialisation
is AMC-style: a replacement's least-squares fits use the activations the *new* model feeds it (so earlier
approximation errors are compensated) and target the *original* layer's pre-activation outputs.
The result is a functional `keras.Model` (also for a Sequential input).

`estimate_plan` builds the same graph without fitting anything and reads the cost model off it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from hgen.compiler.metrics import energy_mj, model_costs, storage_mb
from hgen.compiler.metrics.costs import ModelCosts
from hgen.compiler.ops.base import Built
from hgen.compiler.ops.errors import PlanError
from hgen.compiler.ops.graph import GraphView, functional_view, nodes_in_order
from hgen.compiler.ops.plan import Plan, ResolvedChoice, validate_plan

DEFAULT_CALIBRATION_SAMPLES = 512
BATCH = 256


@dataclass(frozen=True)
class PlanEffect:
    """Cost of a (rewritten) model: stored parameters, MACs, activations, S (MB, Eq. 11) and E (mJ, Eq. 12)."""

    params: int
    macs: int
    activations: int
    storage_mb: float
    energy_mj: float

    @classmethod
    def from_costs(cls, costs: ModelCosts, weight_bits: int = 32, activation_bits: int = 32) -> PlanEffect:
        return cls(costs.weights, costs.macs, costs.activations, storage_mb(costs, weight_bits, activation_bits),
                   energy_mj(costs))

    def minus(self, other: PlanEffect) -> PlanEffect:
        """Difference (self - other), e.g. one operator's effect against the original model."""
        return PlanEffect(self.params - other.params, self.macs - other.macs, self.activations - other.activations,
                          self.storage_mb - other.storage_mb, self.energy_mj - other.energy_mj)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    """Eager forward pass in batches (cheaper than `predict` for the few small calls a rewrite makes)."""
    outs = [np.asarray(model(x[i:i + BATCH], training=False)) for i in range(0, x.shape[0], BATCH)]
    return np.concatenate(outs, axis=0)


def single(tensors: list[Any]) -> Any:
    """A one-element list as its element: a one-input model then accepts a plain array without a warning."""
    return tensors[0] if len(tensors) == 1 else tensors


def clone_layer(layer: Any) -> Any:
    return type(layer).from_config(layer.get_config())


def copy_weights(clone: Any, layer: Any) -> None:
    """Give a built clone the layer's weights, and let it derive what it computes from them: an adapted
    Normalization reads `mean`/`variance` tensors that `finalize_state` makes from its weights, so without it the
    clone kept mean 0, variance 1 (a user's model lost its input normalisation in every rewritten model, and the
    bundle disagreed with model.keras, whose loading calls `finalize_state`)."""
    if layer.weights:
        clone.set_weights(layer.get_weights())
    finalize = getattr(clone, "finalize_state", None)
    if callable(finalize) and layer.weights:
        finalize()


def linear_twin(layer: Any) -> Any:
    """A copy of a built layer with no activation: gives the pre-activation outputs the fits target."""
    twin = type(layer).from_config({**layer.get_config(), "activation": "linear", "name": f"{layer.name}_linear"})
    twin.build(tuple(layer.input.shape))
    twin.set_weights(layer.get_weights())
    return twin


class LayerData:
    """Calibration activations for one replaced layer, computed lazily (exact operators never ask for them)."""

    def __init__(self, original: Any, graph: GraphView, new_inputs: list[Any], new_x: Any, entry: ResolvedChoice,
                 calibration_x: np.ndarray | None, spatial_changed: bool = False) -> None:
        self._original, self._graph, self._new_inputs, self._new_x = original, graph, new_inputs, new_x
        self._entry, self._x, self._spatial_changed = entry, calibration_x, spatial_changed

    def _calibration(self) -> np.ndarray:
        if self._x is None:
            raise PlanError([f"layer '{self._entry.layer.name}': operator '{self._entry.operator.name}' fits its "
                             "weights on activations: pass calibration_x to apply_plan"])
        return self._x

    @cached_property
    def inputs(self) -> np.ndarray:
        """What the replacement sees in the new model (upstream replacements already initialised)."""
        import keras

        return _run(keras.Model(single(self._new_inputs), self._new_x), self._calibration())

    @cached_property
    def original_inputs(self) -> np.ndarray:
        """The original layer's inputs in the original model."""
        import keras

        graph = functional_view(self._original)
        tensor = self._graph.input_tensor[self._entry.layer.name]
        return _run(keras.Model(single(graph.inputs), tensor), self._calibration())

    @cached_property
    def targets(self) -> np.ndarray:
        """The original layer's pre-activation outputs on the calibration data. After a `stem_stride` the new model
        sees smaller maps than the original did, so the target is the original layer on what the new model feeds
        it (the only target with matching positions)."""
        inputs = self.inputs if self._spatial_changed else self.original_inputs
        return _run(linear_twin(self._entry.layer), inputs)


@dataclass(frozen=True)
class Rebuilt:
    model: Any
    inputs: list[Any]
    replaced: list[tuple[ResolvedChoice, Built, Any]]  # entry, what it built, the new tensor it was called on


def rebuild(model: Any, entries: list[ResolvedChoice]) -> Rebuilt:
    """The model's graph with each entry's layer replaced by its operator's sub-graph (not yet initialised).

    Untouched layers always get their weights copied, also for estimates: a masked layer's stored size is its mask.
    """
    import keras

    graph = functional_view(model)
    view = GraphView.of(model)
    by_layer = {entry.layer.name: entry for entry in entries}
    absorbed = {name for entry in entries for name in entry.absorbed}
    tensors: dict[int, Any] = {}
    new_inputs = []
    for tensor in graph.inputs:
        new = keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor._keras_history.operation.name)
        tensors[id(tensor)] = new
        new_inputs.append(new)
    replaced = []
    shrunk = shrinks_maps(entries)
    for node in nodes_in_order(graph):
        if node.is_input:
            continue
        layer = node.operation
        args, kwargs = node.arguments.fill_in(tensors)
        if layer.name in absorbed:
            outputs = args[0]  # removed: pass the input through; the absorbing operator reads past it
        elif layer.name in by_layer:
            entry = by_layer[layer.name]
            x = tensors[id(view.input_tensor[entry.input_layer])]
            built = entry.operator.build(layer, entry.config, x)
            keep_shape(entry, built.output, spatial_changed=shrunk)
            replaced.append((entry, built, x))
            outputs = built.output
        else:
            outputs = _call_clone(layer, args, kwargs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in graph.outputs]
    new_model = keras.Model(single(new_inputs), single(outputs), name=model.name)
    return Rebuilt(new_model, new_inputs, replaced)


def shrinks_maps(entries: list[ResolvedChoice]) -> bool:
    """Whether the plan holds an operator that shrinks the later feature maps (stem_stride)."""
    return not all(entry.operator.keeps_shape for entry in entries)


def keep_shape(entry: ResolvedChoice, output: Any, spatial_changed: bool = False) -> None:
    """Refuse a replacement that changes the layer's output shape: what reads it (a residual Add, a Concatenate, the
    next conv, the classifier) was built for that shape, so the plan would break the model (a typed `PlanError`).
    An operator that declares `keeps_shape = False` (stem_stride) proved in its check that later layers take its
    output; with it in the plan, later maps are smaller, so only rank and channels must match."""
    old, new = tuple(entry.layer.output.shape[1:]), tuple(output.shape[1:])
    if not entry.operator.keeps_shape:
        return
    if spatial_changed and len(old) == 3 and len(new) == 3:
        old, new = old[-1:], new[-1:]
    if old != new:
        raise PlanError([f"layer '{entry.layer.name}': operator '{entry.operator.name}' would change its output "
                         f"shape from {old} to {new}; the layers reading it need {old}"])


def _call_clone(layer: Any, args: tuple, kwargs: dict) -> Any:
    clone = clone_layer(layer)
    outputs = clone(*args, **kwargs)
    copy_weights(clone, layer)
    return outputs


def apply_plan(model: Any, plan: Plan, calibration_x: np.ndarray | None = None, *,
               max_calibration: int = DEFAULT_CALIBRATION_SAMPLES, seed: int = 0) -> Any:
    """A new model with `plan` applied, initialised from `model`'s trained weights. `model` is not modified.

    `calibration_x` (inputs only, no labels) is needed by the operators that fit on activations (gap, fire,
    sparse_random, sparse_decompose, sparse_coding); at most `max_calibration` random samples of it are used.
    """
    entries = validate_plan(model, plan)
    view = GraphView.of(model)
    calibration = _sample(calibration_x, max_calibration, seed)
    rebuilt = rebuild(model, entries)
    shrunk = shrinks_maps(entries)
    for entry, built, new_x in rebuilt.replaced:
        data = LayerData(model, view, rebuilt.inputs, new_x, entry, calibration, shrunk)
        entry.operator.initialise(entry.layer, entry.config, built, data)
    return rebuilt.model


def _sample(x: np.ndarray | None, limit: int, seed: int) -> np.ndarray | None:
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float32)
    if x.shape[0] <= limit:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(x.shape[0], limit, replace=False))]


def estimate_model(model: Any, weight_bits: int = 32, activation_bits: int = 32) -> PlanEffect:
    """Costs of a model as it is (the baseline an operator's effect is measured against)."""
    return PlanEffect.from_costs(model_costs(model), weight_bits, activation_bits)


def estimate_plan(model: Any, plan: Plan, weight_bits: int = 32, activation_bits: int = 32) -> PlanEffect:
    """Costs of `model` rewritten by `plan`, without training or fitting: the graph is built with fresh layers."""
    rebuilt = rebuild(model, validate_plan(model, plan))
    return PlanEffect.from_costs(model_costs(rebuilt.model), weight_bits, activation_bits)


def operator_effect(model: Any, plan: Plan) -> PlanEffect:
    """What `plan` changes: estimate_plan(model, plan) - estimate_model(model) (negative = saved)."""
    return estimate_plan(model, plan).minus(estimate_model(model))
