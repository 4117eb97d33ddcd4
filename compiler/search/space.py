"""The search space: which layers are searched, their states s_l, and the operators valid for each.

This module is the only place the search touches the compression-operator library, so the rest of the
search speaks in layer names and operator names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

IDENTITY = "identity"


@dataclass(frozen=True)
class SearchLayer:
    """One searchable layer and its normalised state s_l = (l, h_l, w_l, c_l) of the layer's input."""

    name: str
    index: int
    kind: str
    input_shape: tuple[int, int, int]
    operators: tuple[str, ...]


@dataclass(frozen=True)
class SearchSpace:
    layers: tuple[SearchLayer, ...]
    actions: tuple[str, ...]
    ratios: dict[str, float]

    def state(self, position: int) -> np.ndarray:
        layer = self.layers[position]
        h, w, c = layer.input_shape
        biggest = max(max(l.input_shape) for l in self.layers)
        return np.array([position / max(1, len(self.layers) - 1), h / biggest, w / biggest, c / biggest])

    def mask(self, position: int) -> np.ndarray:
        allowed = set(self.layers[position].operators)
        return np.array([action in allowed for action in self.actions])

    def valid_mask(self, model: Any, chosen: dict[str, str], position: int) -> np.ndarray:
        """Actions for layer `position` that keep the plan valid given the earlier choices (later layers identity).

        Choosing in layer order with this mask always ends in a plan the library accepts: e.g. `gap` on the
        classifier is offered only when the dense layers it would remove were left alone.
        """
        mask = self.mask(position)
        name = self.layers[position].name
        for index in np.flatnonzero(mask):
            trial = self.identity_plan() | chosen | {name: self.actions[index]}
            mask[index] = is_valid(model, trial, self.ratios)
        return mask

    def repair(self, model: Any, plan: dict[str, str]) -> dict[str, str]:
        """Keep each layer's choice in order while the plan stays valid, else fall back to identity."""
        kept: dict[str, str] = {}
        for position, layer in enumerate(self.layers):
            choice = plan.get(layer.name, IDENTITY)
            allowed = self.valid_mask(model, kept, position)
            kept[layer.name] = choice if allowed[self.actions.index(choice)] else IDENTITY
        return kept

    def encode(self, plan: dict[str, str]) -> np.ndarray:
        """One-hot operator per searched layer, flattened: the DDPG's state."""
        code = np.zeros((len(self.layers), len(self.actions)))
        for i, layer in enumerate(self.layers):
            code[i, self.actions.index(plan.get(layer.name, IDENTITY))] = 1.0
        return code.reshape(-1)

    def identity_plan(self) -> dict[str, str]:
        return {layer.name: IDENTITY for layer in self.layers}


def plan_key(plan: dict[str, str]) -> str:
    return json.dumps(dict(sorted(plan.items())), separators=(",", ":"))


def build_space(model: Any, ratios: dict[str, float] | None = None) -> SearchSpace:
    """Every Conv2D and Dense layer of the model, with the operators the library says apply to it."""
    from hgen.compiler.ops import operators_for

    layers = []
    for index, layer in enumerate(model.layers):
        kind = {"Conv2D": "conv", "Dense": "fc"}.get(type(layer).__name__)
        if kind is None:
            continue
        shape = tuple(layer.input.shape[1:])
        hwc = shape if len(shape) == 3 else (1, 1, shape[-1])
        operators = tuple(sorted(set(operators_for(layer, model)) | {IDENTITY}))
        layers.append(SearchLayer(layer.name, index, kind, hwc, operators))  # type: ignore[arg-type]
    actions = tuple(sorted({op for layer in layers for op in layer.operators}))
    return SearchSpace(tuple(layers), actions, dict(ratios or {}))


def to_library_plan(plan: dict[str, str], ratios: dict[str, float]) -> Any:
    """Our {layer: operator} mapping as the library's Plan (identity layers left out; default ratios)."""
    from hgen.compiler.ops import Plan

    return Plan.of({name: (op, ratios[op]) if op in ratios else op for name, op in plan.items() if op != IDENTITY})


def plan_problems(model: Any, plan: dict[str, str], ratios: dict[str, float]) -> str | None:
    """Why the library rejects the plan as a whole, or None (no fitting: shape and conflict checks only)."""
    from hgen.compiler.errors import CompilerError
    from hgen.compiler.ops import validate_plan

    try:
        validate_plan(model, to_library_plan(plan, ratios))
    except CompilerError as error:
        return str(error)
    return None


def is_valid(model: Any, plan: dict[str, str], ratios: dict[str, float]) -> bool:
    return plan_problems(model, plan, ratios) is None


def apply(model: Any, plan: dict[str, str], ratios: dict[str, float], calibration_x: np.ndarray) -> Any:
    from hgen.compiler.ops import apply_plan

    return apply_plan(model, to_library_plan(plan, ratios), calibration_x)
