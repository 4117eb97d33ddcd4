"""hgen's warm start: the plans that rewrite the fewest layers within S_c and E_c on paper, for its first episode.

The DQN's first plans are random, and on a deep backbone a random plan rewrites nearly every layer (on MobileNetV2's
36 layers every such plan fell to chance accuracy after fine-tuning). The least rewritten model the budgets allow is
the natural first candidate, but "least" needs care: filling layers with identity in layer order pushes the rewrite
to the last layers and to their most saving operator (on LeNet-5 that is `gap` on the classifier, which removes the
whole FC stack). So: every plan that rewrites one layer (then two) and meets both budgets on paper, gentlest first
(the least saving), at most `limit`; screening then picks the one whose untrained rewrite stays closest to the base
model. Past two layers, `PaperBudget.minimal` (identity first, layer by layer).
"""

from __future__ import annotations

from itertools import combinations

from hgen.compiler.search.budget import OperatorCost, PaperBudget
from hgen.compiler.search.space import IDENTITY

MAX_REWRITTEN = 2
Choice = tuple[int, str, OperatorCost]  # position, operator, its cost on paper


def fewest_rewrites(paper: PaperBudget, limit: int = 8) -> list[dict[str, str]]:
    """Feasible plans on paper with the fewest rewritten layers (at most `limit`, gentlest first)."""
    identity = paper.space.identity_plan()
    if paper.within(*paper.additive_cost(identity)):
        return [identity]
    choices = [(position, op, cost) for position, costs in enumerate(paper.costs)
               for op, cost in costs.items() if op != IDENTITY]
    for size in range(1, MAX_REWRITTEN + 1):
        found = [combo for combo in combinations(choices, size) if _fits(paper, combo)]
        if found:
            found.sort(key=lambda combo: _saving(paper, combo))
            return [identity | {paper.space.layers[p].name: op for p, op, _ in combo} for combo in found[:limit]]
    minimal = paper.minimal()
    return [minimal] if minimal is not None else []


def _fits(paper: PaperBudget, combo: tuple[Choice, ...]) -> bool:
    """Distinct layers, none absorbed by another choice, S and E within the budgets (additive, on paper)."""
    names = [paper.space.layers[position].name for position, _, _ in combo]
    if len(set(names)) < len(names) or any(cost.absorbed & set(names) for _, _, cost in combo):
        return False
    storage, energy = paper.base
    return paper.within(storage + sum(c.storage_mb for _, _, c in combo),
                        energy + sum(c.energy_mj for _, _, c in combo))


def _saving(paper: PaperBudget, combo: tuple[Choice, ...]) -> float:
    """How much the choices save, relative to the budgets (the larger, the more drastic the rewrite)."""
    return -sum(c.storage_mb / max(paper.storage_mb, 1e-12) + c.energy_mj / max(paper.energy_mj, 1e-12)
                for _, _, c in combo)
