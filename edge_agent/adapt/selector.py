"""The variant selector's policy around the runtime's Eq. 1 (`hgen.runtime.variants.select`): hysteresis, so the
device does not flap between two options of nearly equal objective, and the reason for every decision.

A better option must beat the running one by `margin` for `dwell` consecutive selections, and variant swaps are
at least `min_switch_interval_s` apart; a running option that breaks a hard constraint (latency under load, memory,
labour with the hub away) is left at the next selection. Changing only tau is cheap (no swap) but follows the same
margin and dwell. A variant left because none of its levels met a hard constraint is held back for a while
(`backoff_s`, doubling each time it is left so, up to BACKOFF_MAX_S): measured load is noisy and differs between
variants, and without it the device can swap back and forth for good. Variants the caller marks rejected (rolled
back at run time) are never chosen. Pure logic on numbers: the agent feeds it the context and applies its decisions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields

import numpy as np

from hgen.edge_agent.config import AdaptConfig
from hgen.runtime.variants import Budgets, Choice, Context, OptionTable, VariantSpec, option_index, scores, select

BACKOFF_FIRST = 4  # the first back-off: this many times the longer of min_switch_interval_s and dwell x interval_s
BACKOFF_MAX_S = 3600.0


@dataclass(frozen=True)
class Decision:
    """What to run now: `variant`/`level` (and its tau); `switch` when that differs from what runs."""

    variant: int
    level: int
    tau: float
    switch: bool
    reason: str
    score: float
    select_ms: float
    choice: Choice | None


class Selector:
    """Holds the running option and the hysteresis state; `decide(context, now)` once per interval."""

    def __init__(self, variants: tuple[VariantSpec, ...], budgets: Budgets, config: AdaptConfig,
                 running: tuple[int, int] | None = None) -> None:
        self.variants = variants
        self.budgets = budgets
        self.config = config
        self.table = OptionTable.of(variants)
        self.running = running
        self._candidate: tuple[int, int] | None = None
        self._wins = 0
        self._last_swap = -math.inf
        self.switches = 0
        self._held: dict[int, tuple[float, float]] = {}  # variant -> (held back until, its last back-off s)

    def decide(self, context: Context, now: float, rejected: AbstractSet[int] = frozenset()) -> Decision:
        """The option to run now; `rejected`: variants never to choose (they failed at run time)."""
        start = time.perf_counter()
        held = self._held_back(now, rejected)
        choice = self._select(context, held)
        current = self._score(context)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        note = self._held_note(now, held, rejected)
        if choice is None:
            return self._keep("no variant meets the hard constraints (latency under load, storage, memory, "
                              f"labour): keeping the running one{note}", current, elapsed_ms, None)
        best = (choice.variant, choice.level)
        if self.running is None or not math.isfinite(current):
            why = "nothing runs from the set yet" if self.running is None else "the running option broke a constraint"
            if self.running is not None and best[0] != self.running[0] and self._variant_broke(context):
                self._back_off(self.running[0], now)
            return self._switch(best, choice, f"{why}: {choice.reason(self.variants)}{note}", now, elapsed_ms)
        if best == self.running:
            self._candidate, self._wins = None, 0
            return self._keep(f"best already: {choice.reason(self.variants)}{note}", current, elapsed_ms, choice)
        gain = choice.score - current
        if gain < self.config.margin:
            self._candidate, self._wins = None, 0
            return self._keep(f"{choice.reason(self.variants)} would gain only {gain:.3f} < margin "
                              f"{self.config.margin}{note}", current, elapsed_ms, choice)
        self._wins = self._wins + 1 if best == self._candidate else 1
        self._candidate = best
        swap = best[0] != self.running[0]
        if self._wins < self.config.dwell:
            return self._keep(f"{choice.reason(self.variants)} better by {gain:.3f}; won {self._wins}/"
                              f"{self.config.dwell} selections{note}", current, elapsed_ms, choice)
        if swap and now - self._last_swap < self.config.min_switch_interval_s:
            return self._keep(f"{choice.reason(self.variants)} better by {gain:.3f}; last swap "
                              f"{now - self._last_swap:.0f} s ago{note}", current, elapsed_ms, choice)
        return self._switch(best, choice, f"better by {gain:.3f}: {choice.reason(self.variants)}{note}", now,
                            elapsed_ms)

    def hold(self, reason: str) -> Decision:
        """No selection now (a swap in flight, an update staged or running): the running option, and why."""
        return self._keep(reason, math.nan, 0.0, None)

    # --- held-back variants ---------------------------------------------------------------------------

    def _held_back(self, now: float, rejected: AbstractSet[int]) -> frozenset[int]:
        """Variants not to choose now: rejected ones, and those in back-off (the running one is never held)."""
        backing_off = {v for v, (until, _) in self._held.items() if now < until}
        running = {self.running[0]} if self.running is not None else set()
        return frozenset((set(rejected) | backing_off) - running)

    def _select(self, context: Context, held: frozenset[int]) -> Choice | None:
        """Eq. 1's best among the options of variants not held back (variant indices stay the set's)."""
        if not held:
            return select(self.table, self.budgets, context)
        keep = ~np.isin(self.table.variant, sorted(held))
        if not keep.any():
            return None
        table = OptionTable(*(getattr(self.table, f.name)[keep] for f in fields(OptionTable)))
        return select(table, self.budgets, context)

    def _variant_broke(self, context: Context) -> bool:
        """No level of the running variant meets the hard constraints (latency, memory, storage): the variant
        itself does not fit, not just its labour level."""
        assert self.running is not None
        score, _ = scores(self.table, self.budgets, context)
        return not np.isfinite(score[self.table.variant == self.running[0]]).any()

    def _back_off(self, variant: int, now: float) -> None:
        first = BACKOFF_FIRST * max(self.config.min_switch_interval_s, self.config.dwell * self.config.interval_s)
        previous = self._held.get(variant, (0.0, 0.0))[1]
        backoff = min(BACKOFF_MAX_S, 2 * previous if previous else first)
        self._held[variant] = (now + backoff, backoff)

    def _held_note(self, now: float, held: frozenset[int], rejected: AbstractSet[int]) -> str:
        if not held:
            return ""
        why = [f"{self.variants[v].name} (" + ("failed at run time" if v in rejected else
                                                f"broke a constraint; back for {self._held[v][0] - now:.0f} s")
               + ")" for v in sorted(held)]
        return "; held back: " + ", ".join(why)

    def _score(self, context: Context) -> float:
        if self.running is None:
            return -math.inf
        score, _ = scores(self.table, self.budgets, context)
        return float(score[option_index(self.table, *self.running)])

    def _keep(self, reason: str, score: float, elapsed_ms: float, choice: Choice | None) -> Decision:
        variant, level = self.running if self.running is not None else (0, 0)
        tau = float(self.table.tau[option_index(self.table, variant, level)])
        return Decision(variant, level, tau, False, reason, score, elapsed_ms, choice)

    def _switch(self, best: tuple[int, int], choice: Choice, reason: str, now: float, elapsed_ms: float) -> Decision:
        if self.running is None or best[0] != self.running[0]:
            self._last_swap = now
        self.running, self._candidate, self._wins = best, None, 0
        self.switches += 1
        return Decision(best[0], best[1], choice.tau, True, reason, choice.score, elapsed_ms, choice)
