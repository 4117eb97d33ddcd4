"""The variant selector's policy around the runtime's Eq. 1 (`hgen.runtime.variants.select`): hysteresis, so the
device does not flap between two options of nearly equal objective, and the reason for every decision.

A better option must beat the running one by `margin` for `dwell` consecutive selections, and variant swaps are
at least `min_switch_interval_s` apart; a running option that breaks a hard constraint (latency under load, memory,
labour with the hub away) is left at the next selection. Changing only tau is cheap (no swap) but follows the same
margin and dwell. Pure logic on numbers: the agent feeds it the context and applies its decisions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from hgen.edge_agent.config import AdaptConfig
from hgen.runtime.variants import Budgets, Choice, Context, OptionTable, VariantSpec, option_index, scores, select


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

    def decide(self, context: Context, now: float) -> Decision:
        start = time.perf_counter()
        choice = select(self.table, self.budgets, context)
        current = self._score(context)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        if choice is None:
            return self._keep("no variant meets the hard constraints (latency under load, storage, memory, "
                              "labour): keeping the running one", current, elapsed_ms, None)
        best = (choice.variant, choice.level)
        if self.running is None or not math.isfinite(current):
            why = "nothing runs from the set yet" if self.running is None else "the running option broke a constraint"
            return self._switch(best, choice, f"{why}: {choice.reason(self.variants)}", now, elapsed_ms)
        if best == self.running:
            self._candidate, self._wins = None, 0
            return self._keep(f"best already: {choice.reason(self.variants)}", current, elapsed_ms, choice)
        gain = choice.score - current
        if gain < self.config.margin:
            self._candidate, self._wins = None, 0
            return self._keep(f"{choice.reason(self.variants)} would gain only {gain:.3f} < margin "
                              f"{self.config.margin}", current, elapsed_ms, choice)
        self._wins = self._wins + 1 if best == self._candidate else 1
        self._candidate = best
        swap = best[0] != self.running[0]
        if self._wins < self.config.dwell:
            return self._keep(f"{choice.reason(self.variants)} better by {gain:.3f}; won {self._wins}/"
                              f"{self.config.dwell} selections", current, elapsed_ms, choice)
        if swap and now - self._last_swap < self.config.min_switch_interval_s:
            return self._keep(f"{choice.reason(self.variants)} better by {gain:.3f}; last swap "
                              f"{now - self._last_swap:.0f} s ago", current, elapsed_ms, choice)
        return self._switch(best, choice, f"better by {gain:.3f}: {choice.reason(self.variants)}", now, elapsed_ms)

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
