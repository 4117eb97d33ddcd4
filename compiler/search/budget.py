"""Budget-aware actions: S and E are analytic, so a plan that breaks S_c or E_c is known before any training.

Each operator rewrites its layer (and, for `gap`, the upstream layers it absorbs) without changing the layer's output
shape, so a plan's S and E are the base model's plus the sum of its operators' effects, each measured once with
`operator_effect` (no fitting). The one exception is `stem_stride`, which shrinks every later feature map: combined
with it, the other operators save ~factor^2 less than their effect says, so the sum is optimistic (a mask may let
through a plan that `exact_cost` then skips on paper, as past the node limit), except for an operator that *adds*
activations, whose cost the sum overstates. The DQN picks an operator per layer, in layer order; at each step an operator is
masked when no valid completion of the remaining layers meets both budgets. The check is a depth-first search over
the remaining layers, cheapest operators first, pruned by the per-budget lower bound (each remaining layer with its
most saving operator), and it honours the library's only cross-layer rule (an absorbed layer stays identity), so on
paper it is exact (but for `stem_stride`, above). Past `NODE_LIMIT` nodes it keeps the operator: a mask may let an infeasible plan through (the
context then skips it on paper) but never removes a feasible one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from hgen.compiler.search.space import IDENTITY, SearchSpace, plan_key, to_library_plan

NODE_LIMIT = 50_000
TOLERANCE = 1e-9  # MB / mJ: float noise from summing effects must not flip a plan that meets a budget exactly


@dataclass(frozen=True)
class OperatorCost:
    """What choosing an operator on a layer changes on paper, and which layers it removes."""

    storage_mb: float
    energy_mj: float
    absorbed: frozenset[str] = frozenset()


@dataclass
class _Walk:
    """Mutable state of one feasibility search: the node count that bounds it."""

    nodes: int = 0


@dataclass
class PaperBudget:
    """Per-layer operator costs of one model and space, and the budgets S_c, E_c they are held against."""

    space: SearchSpace
    base: tuple[float, float]
    costs: tuple[dict[str, OperatorCost], ...]
    storage_mb: float
    energy_mj: float
    model: Any = None
    bits: int = 32  # per weight and activation in S (Eq. 11): 8 when the device runs the int8 model
    _exact: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def build(cls, model: Any, space: SearchSpace, storage_mb: float, energy_mj: float,
              bits: int = 32) -> PaperBudget:
        """One `operator_effect` per (layer, operator): a fraction of a second for LeNet-5, once per search."""
        from hgen.compiler.ops import estimate_model

        base = estimate_model(model, bits, bits)
        costs = tuple(_layer_costs(model, space, position, bits) for position in range(len(space.layers)))
        return cls(space, (base.storage_mb, base.energy_mj), costs, storage_mb, energy_mj, model, bits)

    def within(self, storage: float, energy: float) -> bool:
        return storage <= self.storage_mb + TOLERANCE and energy <= self.energy_mj + TOLERANCE

    def additive_cost(self, plan: dict[str, str]) -> tuple[float, float]:
        """S and E of a valid plan as base + the sum of its operators' effects."""
        storage, energy = self.base
        for position, layer in enumerate(self.space.layers):
            cost = self.costs[position].get(plan.get(layer.name, IDENTITY))
            if cost is None:  # an operator that cannot be built on this layer
                return np.inf, np.inf
            storage, energy = storage + cost.storage_mb, energy + cost.energy_mj
        return storage, energy

    def exact_cost(self, plan: dict[str, str]) -> tuple[float, float]:
        """S and E from `estimate_plan` (the graph rebuilt, nothing fitted); cached per plan."""
        from hgen.compiler.ops import estimate_plan

        key = plan_key(plan)
        if key not in self._exact:
            effect = estimate_plan(self.model, to_library_plan(plan, self.space.ratios), self.bits, self.bits)
            self._exact[key] = (effect.storage_mb, effect.energy_mj)
        return self._exact[key]

    def describe_best(self) -> str:
        """The least S and the least E a real plan reaches (each on its own), for a message about the budgets.

        Not `lower_bounds[0]`: that sums every layer's most saving operator, also for layers another operator
        absorbs, so it can fall below zero; it only prunes the search."""
        return _least_text(*self._least())

    def least_storage(self) -> tuple[float, float]:
        """Exact (S, E) of the valid plan with the least S on paper."""
        return self.exact_cost(self._least_plan(0))

    def least_energy(self) -> tuple[float, float]:
        """Exact (S, E) of the valid plan with the least E on paper."""
        return self.exact_cost(self._least_plan(1))

    def _least(self) -> tuple[float, float]:
        """The least S and the least E real plans reach, each on its own."""
        return self.least_storage()[0], self.least_energy()[1]

    def require_reachable(self) -> None:
        """Raise `UnreachableBudgetError` naming what to raise when no plan meets S_c and E_c on paper: every
        candidate would be skipped, so the compile stops before training instead of after an empty search."""
        from hgen.compiler.errors import UnreachableBudgetError

        if self.completion({}, 0) is not None:
            return
        least_s, least_e = self._least()
        fixes = []
        if least_s > self.storage_mb + TOLERANCE:
            fixes.append(f"raise --storage-mb to at least {_up(least_s)}")
        if least_e > self.energy_mj + TOLERANCE:
            fixes.append(f"raise --energy-mj to at least {_up(least_e)}")
        raise UnreachableBudgetError(
            f"no compression plan meets S <= {self.storage_mb} MB and E <= {self.energy_mj} mJ on paper: "
            f"{_least_text(least_s, least_e)}"
            + (f" ({', '.join(fixes)}, or pick a smaller model)" if fixes else
               " but no single plan reaches both budgets (raise either, or pick a smaller model)"))

    def _least_plan(self, axis: int) -> dict[str, str]:
        """The valid plan with the least additive S (axis 0) or E (axis 1): depth-first, cheapest operators first,
        pruned by `lower_bounds`, honouring absorbed layers; past `NODE_LIMIT` nodes, the best plan found so far."""
        names = [layer.name for layer in self.space.layers]
        best: list[Any] = [0.0, {name: IDENTITY for name in names}]  # identity is always valid and costs nothing
        walk = _Walk()
        cheapest_first = [sorted(costs.items(), key=lambda item: _axis(item[1], axis)) for costs in self.costs]

        def visit(position: int, total: float, picked: dict[str, str], forced: frozenset[str]) -> None:
            walk.nodes += 1
            if walk.nodes > NODE_LIMIT or total + self.lower_bounds[position][axis] >= best[0] - TOLERANCE:
                return
            if position == len(names):
                best[:] = [total, dict(picked)]
                return
            used = {n for n, op in picked.items() if op != IDENTITY}
            for op, cost in cheapest_first[position]:
                if op != IDENTITY and (names[position] in forced or cost.absorbed & used):
                    continue
                visit(position + 1, total + _axis(cost, axis), picked | {names[position]: op}, forced | cost.absorbed)

        visit(0, 0.0, {}, frozenset())
        return best[1]

    def violations(self, plan: dict[str, str]) -> list[str]:
        """Why a (library-valid) plan cannot meet the budgets on paper; empty when it can."""
        storage, energy = self.exact_cost(plan)
        problems = []
        if storage > self.storage_mb + TOLERANCE:
            problems.append(f"storage {storage:.4f} MB > {self.storage_mb} MB on paper (not fine-tuned)")
        if energy > self.energy_mj + TOLERANCE:
            problems.append(f"energy {energy:.4f} mJ > {self.energy_mj} mJ on paper (not fine-tuned)")
        return problems

    def mask(self, valid: np.ndarray, chosen: dict[str, str], position: int) -> np.ndarray:
        """`valid` without the operators after which no completion of the later layers meets S_c and E_c."""
        keep = np.zeros_like(valid, dtype=bool)
        for index in np.flatnonzero(valid):
            keep[index] = self.completion(chosen | {self.space.layers[position].name: self.space.actions[index]},
                                          position + 1) is not None
        return keep

    def completion(self, chosen: dict[str, str], position: int) -> dict[str, str] | None:
        """A plan extending `chosen` (layers before `position`) that meets both budgets, or None if there is none.

        Past the node limit, returns `chosen` with identity for the rest, a plan that may not meet them.
        """
        names = [layer.name for layer in self.space.layers[:position]]
        picked = {name: chosen.get(name, IDENTITY) for name in names}
        storage, energy = self.additive_cost(picked)
        if not np.isfinite(storage):
            return None
        forced = set().union(*(self.costs[i][picked[n]].absorbed for i, n in enumerate(names)))
        walk = _Walk()
        found = self._search(position, storage, energy, picked, forced, walk)
        return found if found is not None or walk.nodes <= NODE_LIMIT else picked | self._identity_from(position)

    def _identity_from(self, position: int) -> dict[str, str]:
        return {layer.name: IDENTITY for layer in self.space.layers[position:]}

    def minimal(self) -> dict[str, str] | None:
        """The least rewritten plan the budgets allow on paper: identity on every layer where a completion of the
        later layers still meets S_c and E_c, the most saving operator first elsewhere (None if there is none).
        hgen's warm start falls back to it when no plan rewriting one or two layers fits (`warm_start.py`)."""
        walk = _Walk()
        return self._search(0, *self.base, {}, set(), walk, order=self._identity_first)

    def _identity_first(self, position: int) -> list[tuple[str, OperatorCost]]:
        ordered = self._cheapest_first(position)
        return [item for item in ordered if item[0] == IDENTITY] + [item for item in ordered if item[0] != IDENTITY]

    def _search(self, position: int, storage: float, energy: float, picked: dict[str, str], forced: set[str],
                walk: _Walk, order: Any = None) -> dict[str, str] | None:
        walk.nodes += 1
        if walk.nodes > NODE_LIMIT:
            return None
        if position == len(self.space.layers):
            return dict(picked) if self.within(storage, energy) else None
        rest_s, rest_e = self.lower_bounds[position + 1]
        name = self.space.layers[position].name
        used = {n for n, op in picked.items() if op != IDENTITY}
        for op, cost in (order or self._cheapest_first)(position):
            if op != IDENTITY and (name in forced or cost.absorbed & used):
                continue
            s, e = storage + cost.storage_mb, energy + cost.energy_mj
            if not self.within(s + rest_s, e + rest_e):
                continue
            found = self._search(position + 1, s, e, picked | {name: op}, forced | cost.absorbed, walk, order)
            if found is not None or walk.nodes > NODE_LIMIT:
                return found
        return None

    def _cheapest_first(self, position: int) -> list[tuple[str, OperatorCost]]:
        scale = (max(self.storage_mb, 1e-12), max(self.energy_mj, 1e-12))
        return sorted(self.costs[position].items(),
                      key=lambda item: item[1].storage_mb / scale[0] + item[1].energy_mj / scale[1])

    @cached_property
    def lower_bounds(self) -> list[tuple[float, float]]:
        """Suffix sums of each layer's most saving S and E (separately): no completion can do better."""
        bounds = [(0.0, 0.0)]
        for costs in reversed(self.costs):
            s, e = bounds[0]
            bounds.insert(0, (s + min(c.storage_mb for c in costs.values()),
                              e + min(c.energy_mj for c in costs.values())))
        return bounds


def _least_text(storage_mb: float, energy_mj: float) -> str:
    return f"the least S a plan reaches is {storage_mb:.4f} MB, the least E {energy_mj:.4f} mJ"


def _up(value: float, digits: int = 4) -> str:
    """`value` rounded up, so a budget set to the printed number is met."""
    return f"{math.ceil(value * 10**digits) / 10**digits:.{digits}f}"


def _axis(cost: OperatorCost, axis: int) -> float:
    return cost.storage_mb if axis == 0 else cost.energy_mj


def _layer_costs(model: Any, space: SearchSpace, position: int, bits: int = 32) -> dict[str, OperatorCost]:
    """Every operator the layer may take that the library accepts and can build; others are left out."""
    from hgen.compiler.errors import CompilerError
    from hgen.compiler.ops import estimate_model, estimate_plan, validate_plan

    base = estimate_model(model, bits, bits)
    layer = space.layers[position]
    costs = {IDENTITY: OperatorCost(0.0, 0.0)}
    for op in layer.operators:
        if op == IDENTITY:
            continue
        plan = to_library_plan({layer.name: op}, space.ratios)
        try:
            absorbed = frozenset(validate_plan(model, plan)[0].absorbed)
            effect = estimate_plan(model, plan, bits, bits)
        except CompilerError:  # e.g. a rewrite that changes the output shape: never buildable, never chosen
            continue
        costs[op] = OperatorCost(effect.storage_mb - base.storage_mb, effect.energy_mj - base.energy_mj, absorbed)
    return costs
