"""Variants chosen by context (AdaSpring): which of the bundle's variants, and which tau, to run right now.

Every option is one variant at one labour level (its tau for that level). Hard constraints drop options: the
variant's latency, scaled by the load the device measures, within the latency demand; storage within the storage
demand; memory within the free memory; the level's labour within what the context allows (nothing when the hub is
away). Among the rest the selector maximises AdaSpring's Eq. 1 in the issue's form,

    lambda1 log(A - A_min) + lambda2 log(E_max - E),   lambda2 = max(0.3, 1 - battery), lambda1 = 1 - lambda2,

with A the option's predicted fused accuracy and E the variant's energy per inference. The issue notes that the
paper (Liu et al., IMWUT 2021) states Eq. 1 in two versions; its full text was not reachable from here (only the
abstract), so this implements the issue's form with these choices: margins are taken to the compile's demands
(A_min = accuracy demand, E_max = energy budget per inference), energy enters as a cost under its budget, and
latency and storage are hard constraints rather than terms. The logs make the trade-off scale-free (a margin counts
relatively, whatever its unit) and push hard against a margin near zero. Below `MIN_MARGIN` (a demand missed) the
log continues as its tangent, log(eps) + (m - eps) / eps: such options stay comparable and a shortfall costs
steeply, so with nothing meeting a demand the option that misses it least wins, and the choice says which demand
it misses. A charging device, or one
without a battery, counts as full (lambda2 = 0.3).

Numpy only, vectorised over options: selection is microseconds for a handful of variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hgen.runtime.errors import InvalidInputError

MIN_LAMBDA2 = 0.3
MIN_MARGIN = 1e-4


@dataclass(frozen=True)
class LabourLevel:
    """One operating point of a variant: the tau that spends at most `labour` (Eq. 13's L) and its fused accuracy."""

    labour: float
    tau: float
    accuracy: float


@dataclass(frozen=True)
class VariantSpec:
    """What the compiler predicts for one variant on the target (per inference) and its labour levels."""

    name: str
    latency_ms: float
    storage_mb: float
    energy_mj: float
    memory_mb: float
    levels: tuple[LabourLevel, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise InvalidInputError(f"variant {self.name} has no labour levels")
        if min(self.latency_ms, self.storage_mb, self.energy_mj, self.memory_mb) < 0:
            raise InvalidInputError(f"variant {self.name} has a negative cost")


@dataclass(frozen=True)
class Budgets:
    """The compile's demands the selection respects: A_min and E_max are soft (in the objective), T and S hard."""

    accuracy: float
    latency_ms: float
    storage_mb: float
    energy_mj: float


@dataclass(frozen=True)
class Context:
    """What the device knows right now. `load` = measured / predicted latency of the running variant (1: as
    predicted); `labour_allowed` = the labour share the selection may spend (0 with the hub away)."""

    battery: float | None = None
    charging: bool = False
    load: float = 1.0
    free_memory_mb: float | None = None
    labour_allowed: float = math.inf


@dataclass(frozen=True)
class Choice:
    variant: int
    level: int
    tau: float
    score: float
    lambda1: float
    lambda2: float
    misses: tuple[str, ...] = ()  # soft demands the choice misses (accuracy, energy)
    dropped: dict[str, int] = field(default_factory=dict)  # options dropped per hard constraint

    def reason(self, variants: tuple[VariantSpec, ...]) -> str:
        spec, level = variants[self.variant], variants[self.variant].levels[self.level]
        text = (f"{spec.name} tau {self.tau:.3f} (L {level.labour:.3f}): score {self.score:.3f} with lambda1 "
                f"{self.lambda1:.2f}, lambda2 {self.lambda2:.2f}")
        if self.dropped:
            text += "; dropped " + ", ".join(f"{n} for {k}" for k, n in sorted(self.dropped.items()) if n)
        if self.misses:
            text += "; misses " + ", ".join(self.misses)
        return text


def weights(battery: float | None, charging: bool) -> tuple[float, float]:
    """(lambda1, lambda2): energy weighs more as the battery drains; never below 0.3."""
    level = 1.0 if battery is None or charging else min(1.0, max(0.0, float(battery)))
    lambda2 = max(MIN_LAMBDA2, 1.0 - level)
    return 1.0 - lambda2, lambda2


@dataclass(frozen=True)
class OptionTable:
    """Every (variant, level) as flat arrays, built once per variant set."""

    variant: np.ndarray
    level: np.ndarray
    latency: np.ndarray
    storage: np.ndarray
    energy: np.ndarray
    memory: np.ndarray
    labour: np.ndarray
    accuracy: np.ndarray
    tau: np.ndarray

    @classmethod
    def of(cls, variants: tuple[VariantSpec, ...]) -> OptionTable:
        if not variants:
            raise InvalidInputError("no variants to choose from")
        rows = [(v, k, s.latency_ms, s.storage_mb, s.energy_mj, s.memory_mb, lv.labour, lv.accuracy, lv.tau)
                for v, s in enumerate(variants) for k, lv in enumerate(s.levels)]
        cols = list(zip(*rows))
        return cls(*(np.asarray(c, np.int64 if i < 2 else np.float64) for i, c in enumerate(cols)))


def log_margin(margin: np.ndarray) -> np.ndarray:
    """log(m) for m >= MIN_MARGIN, its tangent below: finite and increasing everywhere."""
    margin = np.asarray(margin, np.float64)
    safe = np.maximum(margin, MIN_MARGIN)
    return np.where(margin >= MIN_MARGIN, np.log(safe), math.log(MIN_MARGIN) + (margin - MIN_MARGIN) / MIN_MARGIN)


def constraints(table: OptionTable, budgets: Budgets, context: Context) -> dict[str, np.ndarray]:
    """Per hard constraint, which options satisfy it."""
    memory = (table.memory <= context.free_memory_mb if context.free_memory_mb is not None
              else np.ones(table.memory.shape, bool))
    return {"latency": table.latency * max(context.load, 0.0) <= budgets.latency_ms,
            "storage": table.storage <= budgets.storage_mb,
            "memory": memory,
            "labour": table.labour <= context.labour_allowed + 1e-12}


def scores(table: OptionTable, budgets: Budgets, context: Context) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Eq. 1 for every option (-inf where a hard constraint fails) and the constraint masks."""
    hard = constraints(table, budgets, context)
    lambda1, lambda2 = weights(context.battery, context.charging)
    score = (lambda1 * log_margin(table.accuracy - budgets.accuracy)
             + lambda2 * log_margin(budgets.energy_mj - table.energy))
    return np.where(np.logical_and.reduce(list(hard.values())), score, -np.inf), hard


def select(table: OptionTable, budgets: Budgets, context: Context) -> Choice | None:
    """The best option under the hard constraints, or None when none fits (the caller keeps what runs)."""
    score, hard = scores(table, budgets, context)
    best = int(np.argmax(score))
    if not np.isfinite(score[best]):
        return None
    lambda1, lambda2 = weights(context.battery, context.charging)
    misses = tuple(name for name, margin in (("accuracy", table.accuracy[best] - budgets.accuracy),
                                             ("energy", budgets.energy_mj - table.energy[best])) if margin <= 0)
    return Choice(int(table.variant[best]), int(table.level[best]), float(table.tau[best]), float(score[best]),
                  lambda1, lambda2, misses, {k: int((~v).sum()) for k, v in hard.items()})


def option_index(table: OptionTable, variant: int, level: int) -> int:
    found = np.flatnonzero((table.variant == variant) & (table.level == level))
    if not len(found):
        raise InvalidInputError(f"no option for variant {variant} level {level}")
    return int(found[0])
