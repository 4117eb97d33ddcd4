"""What every strategy shares: the evaluator, the reward, the budget, the log, and the best candidates so far.

Strategies only propose (plan, tau); the context evaluates, scores (Eq. 14-15), logs a JSONL record per candidate,
and decides when to stop: at the first candidate meeting all demands and budgets (Algorithm 1, line 22) unless asked
to go on, or when the episodes, distinct backbone evaluations or wall time run out. A candidate meets A only when
its accuracy's lower confidence bound on the search split does (`margin.py`), against the winner's curse. A plan
whose S or E breaks the budget on paper is recorded as skipped and never fine-tuned; asked to refine, the context
replaces a proposed tau by the best-rewarded one within L_c and T_d on the search split (`tau.py`), recording both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hgen.compiler.search.budget import PaperBudget
from hgen.compiler.search.evaluator import Backbone, CandidateEvaluator
from hgen.compiler.search.margin import AccuracyBound
from hgen.compiler.search.objective import Coefficients, Demands, Measured, reward, safe_log, violations
from hgen.compiler.search.space import plan_problems

INVALID_PLAN_REWARD = -1000.0


@dataclass(frozen=True)
class Budget:
    episodes: int = 60
    evaluations: int | None = None
    seconds: float = 900.0
    stop_at_feasible: bool = True


@dataclass(frozen=True)
class Candidate:
    """One scored (plan, tau)."""

    index: int
    episode: int
    plan: dict[str, str]
    tau: float
    measured: Measured | None
    r1: float
    r2: float
    violations: tuple[str, ...]
    evaluations: int
    elapsed_seconds: float
    tau_proposed: float | None = None
    skipped_on_paper: bool = False
    accuracy_lower: float | None = None

    @property
    def reward(self) -> float:
        return self.r1 + self.r2

    @property
    def feasible(self) -> bool:
        return self.measured is not None and not self.violations

    def to_record(self) -> dict[str, Any]:
        return {"index": self.index, "episode": self.episode, "plan": self.plan, "tau": self.tau,
                "tau_proposed": self.tau_proposed, "skipped_on_paper": self.skipped_on_paper,
                "accuracy_lower": self.accuracy_lower,
                "measured": self.measured.to_dict() if self.measured else None, "r1": self.r1, "r2": self.r2,
                "reward": self.reward, "feasible": self.feasible, "violations": list(self.violations),
                "evaluations": self.evaluations, "elapsed_seconds": round(self.elapsed_seconds, 3)}


class StopSearch(Exception):
    """Raised inside a strategy when the context decides the search is over."""


@dataclass
class SearchContext:
    evaluator: CandidateEvaluator
    demands: Demands
    coefficients: Coefficients
    budget: Budget
    on_candidate: Callable[[Candidate], None] = lambda candidate: None
    candidates: list[Candidate] = field(default_factory=list)
    stop_reason: str = ""
    episode: int = 0
    started: float = field(default_factory=time.perf_counter)
    paper: PaperBudget | None = None
    accuracy_confidence: float = 0.0
    fine_tune_seconds: list[float] = field(default_factory=list)  # wall time of each new backbone so far

    @property
    def accuracy_bound(self) -> AccuracyBound:
        """How A is judged: the lower confidence bound over the search split (confidence 0: the point estimate)."""
        return AccuracyBound(self.evaluator.search_size, self.accuracy_confidence)

    def paper_budget(self) -> PaperBudget:
        """S and E of every operator on every layer, measured once on paper when first needed.

        If no plan of the space can meet S_c and E_c, the search stops here: every plan would be skipped.
        """
        if self.paper is None:
            self.paper = PaperBudget.build(self.evaluator.base, self.evaluator.space, self.demands.storage_mb,
                                           self.demands.energy_mj, self.evaluator.config.storage_bits)
            if self.paper.completion({}, 0) is None:
                self._stop(f"no plan meets S <= {self.demands.storage_mb} MB and E <= {self.demands.energy_mj} mJ "
                           f"on paper ({self.paper.describe_best()})")
        return self.paper

    def action_mask(self, plan: dict[str, str], position: int) -> np.ndarray:
        """Operators for layer `position` that keep the plan valid and leave a completion within S_c and E_c.

        When none does (the budgets cannot be met after the earlier choices), the valid ones: the finished plan is
        then skipped on paper rather than fine-tuned.
        """
        space = self.evaluator.space
        valid = space.valid_mask(self.evaluator.base, plan, position)
        affordable = self.paper_budget().mask(valid, plan, position)
        return affordable if affordable.any() else valid

    @property
    def skipped_on_paper(self) -> int:
        return sum(c.skipped_on_paper for c in self.candidates)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def check_budget(self, new_evaluation: bool = False) -> None:
        if self.elapsed >= self.budget.seconds:
            self._stop(f"wall-time budget of {self.budget.seconds:.0f} s used")
        if new_evaluation and self.fine_tune_seconds:  # a fine-tune cannot be cut short: do not start one that
            expected = float(np.median(self.fine_tune_seconds))  # would end well past the budget
            if self.elapsed + expected > self.budget.seconds:
                self._stop(f"wall-time budget of {self.budget.seconds:.0f} s: the next fine-tune (about "
                           f"{expected:.0f} s, as the ones before) would end past it")
        limit = self.budget.evaluations
        if new_evaluation and limit is not None and self.evaluator.evaluations >= limit:
            self._stop(f"evaluation budget of {limit} backbones used")

    def _stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        raise StopSearch(reason)

    def next_episode(self) -> int:
        self.check_budget()
        if self.episode >= self.budget.episodes:
            self._stop(f"episode budget of {self.budget.episodes} used")
        self.episode += 1
        return self.episode

    def backbone(self, plan: dict[str, str]) -> Backbone:
        new = not self.evaluator.cached(plan)
        self.check_budget(new_evaluation=new)
        start = time.perf_counter()
        backbone = self.evaluator.backbone(plan)
        if new:
            self.fine_tune_seconds.append(time.perf_counter() - start)
        return backbone

    def costs_a_backbone(self, plan: dict[str, str]) -> bool:
        """Whether scoring `plan` would fine-tune a new backbone: valid, within S_c and E_c on paper, not cached."""
        if self.evaluator.cached(plan) or plan_problems(self.evaluator.base, plan, self.evaluator.space.ratios):
            return False
        return not self.paper_budget().violations(plan)

    def score(self, plan: dict[str, str], tau: float, refine: bool = False) -> Candidate:
        """Evaluate (plan, tau), log it, and stop the search at the first feasible one when asked to.

        A plan the library rejects, or whose S or E breaks the budget on paper, is scored without being evaluated,
        so it costs no fine-tune and no evaluation budget. With `refine`, `tau` is a proposal that
        `evaluator.best_tau` replaces by the threshold with the best reward among those whose labour and latency
        (people's time grows with tau) meet L_c and T_d by their upper bounds (`tau.py`); the candidate records both.
        """
        problems = plan_problems(self.evaluator.base, plan, self.evaluator.space.ratios)
        if problems:
            self.check_budget()
            return self._record(plan, tau, None, INVALID_PLAN_REWARD, 0.0, (problems,))
        over = self.paper_budget().violations(plan)
        if over:
            self.check_budget()
            return self._record(plan, tau, None, INVALID_PLAN_REWARD, self._paper_r2(plan), tuple(over),
                                skipped_on_paper=True)
        backbone = self.backbone(plan)
        if backbone.error:
            candidate = self._record(plan, tau, None, INVALID_PLAN_REWARD, 0.0, (backbone.error,))
        else:
            proposal = tau if refine else None
            tau = (self.evaluator.best_tau(backbone, tau, self.demands, self.coefficients,
                                           self.accuracy_confidence).tau if refine else tau)
            measured = self.evaluator.measure(backbone, tau)
            r1, r2 = reward(measured, self.demands, self.coefficients)
            lower = self.accuracy_bound.lower(measured.accuracy)
            candidate = self._record(plan, tau, measured, r1, r2, self._violations(measured, lower),
                                     tau_proposed=proposal, accuracy_lower=lower)
        if candidate.feasible and self.budget.stop_at_feasible:
            self._stop(f"feasible candidate found at episode {self.episode} (Algorithm 1, line 22)")
        return candidate

    def _violations(self, measured: Measured, lower: float) -> tuple[str, ...]:
        """The demands' violations, plus accuracy when only its point estimate meets A (the margin)."""
        found = violations(measured, self.demands)
        if lower < self.demands.accuracy <= measured.accuracy:
            found.insert(0, f"accuracy lower bound {lower:.4f} < {self.demands.accuracy} "
                            f"({self.accuracy_bound.describe()}; point estimate {measured.accuracy:.4f})")
        return tuple(found)

    def _paper_r2(self, plan: dict[str, str]) -> float:
        """Eq. 15's storage and energy terms from the paper costs: a plan further over budget ranks lower."""
        storage, energy = self.paper_budget().exact_cost(plan)
        d = self.demands
        return (self.coefficients.d3 * safe_log((d.storage_mb - storage) / d.storage_mb)
                + self.coefficients.d4 * safe_log((d.energy_mj - energy) / d.energy_mj))

    def _record(self, plan: dict[str, str], tau: float, measured: Measured | None, r1: float, r2: float,
                problems: tuple[str, ...], tau_proposed: float | None = None,
                skipped_on_paper: bool = False, accuracy_lower: float | None = None) -> Candidate:
        candidate = Candidate(len(self.candidates), self.episode, dict(plan), float(tau), measured, r1, r2, problems,
                              self.evaluator.evaluations, self.elapsed,
                              None if tau_proposed is None else float(tau_proposed), skipped_on_paper, accuracy_lower)
        self.candidates.append(candidate)
        self.on_candidate(candidate)
        return candidate

    def best(self) -> Candidate | None:
        return max(self.candidates, key=lambda c: c.reward, default=None)

    def best_feasible(self) -> Candidate | None:
        return max((c for c in self.candidates if c.feasible), key=lambda c: c.reward, default=None)
