"""Cheap, honest candidate evaluation shared by every strategy.

Per plan (cached): weight-preserving rewrite -> short distillation fine-tune on a training subset (plus the human
knowledge base when given) -> temperature calibration on one half of the validation split -> logits on the other
half, which the search never trains or calibrates on -> S and E from the cost model -> LiteRT latency on this host
times the device's scale. Per (plan, tau), nothing is retrained: the runtime gate and fusion re-run on cached
logits with the simulated crowd's cached answers, so a threshold costs microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.compiler.data import Dataset, Split
from hgen.compiler.data.lazy import concat
from hgen.compiler.errors import CompilerError
from hgen.compiler.metrics import ask_crowd, energy_mj, evaluate_hdnn, fit_difficulty, model_costs, storage_mb
from hgen.compiler.metrics.hdnn import TauChoice, TauSweep, refine_tau, sweep_tau
from hgen.compiler.metrics.latency import litert_latency_ms
from hgen.compiler.search.devices import DeviceProfile
from hgen.compiler.search.objective import Coefficients, Demands, Measured
from hgen.compiler.search.space import SearchSpace, apply, plan_key
from hgen.compiler.search.tau import best_tau
from hgen.compiler.train import DistillConfig, calibrate, distill, predict_logits
from hgen.hub.crowd import CrowdAnswers, SimulatedCrowd
from hgen.runtime.hdnn import DEFAULT_KIND, FUSION_LAMBDA_DEFAULT, check_fusion_lambda
from hgen.runtime.labour import DifficultyEstimator


STORAGE_BITS = (8, 32)  # float32 and full-int8 deployments (hgen.compiler.lowering.tflite)


@dataclass(frozen=True)
class EvaluatorConfig:
    finetune_samples: int = 8000
    finetune_epochs: int = 1
    distill_temperature: float = 4.0
    latency_repeats: int = 30
    m: int = 3
    annotator_accuracy: float = 0.9
    fusion_lambda: float = FUSION_LAMBDA_DEFAULT
    seed: int = 0
    kind: str = DEFAULT_KIND  # the H-DNN kind measured: the simulated crowd answers classes, so a classifier kind
    storage_bits: int = 32  # bits per weight and activation the device stores (Eq. 11): 8 for an int8 deployment

    def __post_init__(self) -> None:
        check_fusion_lambda(self.fusion_lambda)  # the bounds the manifest will check, before any candidate is trained
        if self.storage_bits not in STORAGE_BITS:
            raise CompilerError(f"storage_bits must be one of {STORAGE_BITS}, got {self.storage_bits}")


@dataclass(frozen=True)
class Backbone:
    """A compressed, fine-tuned, calibrated candidate and everything measured on it that does not depend on tau."""

    plan: dict[str, str]
    model: Any
    temperature: float
    logits: np.ndarray
    params: int
    macs: int
    storage_mb: float
    energy_mj: float
    latency_ms: float
    finetune_seconds: float
    error: str | None = None


@dataclass(frozen=True)
class HeldOut:
    """A labelled split with the crowd's answers to every sample (drawn once, reused for every candidate)."""

    split: Split
    answers: CrowdAnswers


class CandidateEvaluator:
    """Evaluates plans for one base model, dataset, device and crowd; caches by plan."""

    def __init__(self, base_model: Any, dataset: Dataset, space: SearchSpace, device: DeviceProfile,
                 config: EvaluatorConfig = EvaluatorConfig(), knowledge: Split | None = None) -> None:
        self.base = base_model
        self.dataset = dataset
        self.space = space
        self.device = device
        self.config = config
        half = len(dataset.val) // 2
        self.calibration = Split(dataset.val.x[:half], dataset.val.y[:half])
        search = Split(dataset.val.x[half:], dataset.val.y[half:])
        self.knowledge = knowledge if knowledge is not None and len(knowledge) else None
        self.finetune = self._with_knowledge(self._training_subset())
        self.teacher_logits = predict_logits(base_model, self.finetune.x)
        self.crowd = SimulatedCrowd.uniform(config.m, config.annotator_accuracy, dataset.num_classes, config.seed)
        self.base_temperature = calibrate(base_model, self.calibration)
        self.difficulty: DifficultyEstimator = fit_difficulty(self.crowd, predict_logits(base_model, self.calibration.x),
                                                              self.calibration.y, config.m, self.base_temperature)
        self.search = self.held_out(search)
        self._cache: dict[str, Backbone] = {}

    def held_out(self, split: Split) -> HeldOut:
        """The crowd answers each image once; how hard an image is comes from the base model, not the candidate."""
        logits = predict_logits(self.base, split.x)
        return HeldOut(split, ask_crowd(self.crowd, logits, split.y, self.config.m, self.base_temperature))

    def _training_subset(self) -> Split:
        rng = np.random.default_rng(self.config.seed)
        train = self.dataset.train
        pick = rng.choice(len(train), min(self.config.finetune_samples, len(train)), replace=False)
        return Split(train.x[pick], train.y[pick])

    def _with_knowledge(self, data: Split) -> Split:
        """Human-labelled samples from the knowledge base join every fine-tune (the paper's enhancement data)."""
        if self.knowledge is None:
            return data
        return Split(concat([data.x, self.knowledge.x]), np.concatenate([data.y, self.knowledge.y]))

    @property
    def evaluations(self) -> int:
        return len(self._cache)

    @property
    def search_size(self) -> int:
        """Images the search judges candidates on (the half of the validation split not used to calibrate)."""
        return len(self.search.split)

    def cached(self, plan: dict[str, str]) -> bool:
        return plan_key(plan) in self._cache

    def backbone(self, plan: dict[str, str]) -> Backbone:
        key = plan_key(plan)
        if key not in self._cache:
            self._cache[key] = self._build(plan)
        return self._cache[key]

    def _build(self, plan: dict[str, str], data: Split | None = None, teacher: np.ndarray | None = None,
               epochs: int | None = None) -> Backbone:
        try:
            model = apply(self.base, plan, self.space.ratios, self.finetune.x[:512])
        except CompilerError as error:  # an operator that cannot apply: the plan is infeasible, not the search
            return Backbone(plan, None, 1.0, np.zeros((0, 0)), 0, 0, np.inf, np.inf, np.inf, 0.0, str(error))
        data = data or self.finetune
        seconds = distill(model, self.teacher_logits if teacher is None else teacher, data, DistillConfig(
            epochs=epochs or self.config.finetune_epochs, temperature=self.config.distill_temperature,
            seed=self.config.seed))
        temperature = calibrate(model, self.calibration)
        costs = model_costs(model)
        host_ms = litert_latency_ms(model, self.config.latency_repeats)
        return Backbone(plan, model, temperature, predict_logits(model, self.search.split.x), model.count_params(),
                        costs.macs, storage_mb(costs, self.config.storage_bits, self.config.storage_bits),
                        energy_mj(costs), self.device.latency_ms(host_ms),
                        seconds)

    def measure(self, backbone: Backbone, tau: float, held_out: HeldOut | None = None,
                logits: np.ndarray | None = None) -> Measured:
        """A/T/S/E/L of the H-DNN (backbone, tau) through the runtime gate and fusion."""
        held = held_out or self.search
        result = evaluate_hdnn(backbone.logits if logits is None else logits, held.split.y, held.answers, tau=tau,
                               temperature=backbone.temperature, fusion_lambda=self.config.fusion_lambda,
                               difficulty=self.difficulty, t_infer_ms=backbone.latency_ms, kind=self.config.kind)
        return Measured(result.accuracy_fused, result.latency_ms, backbone.storage_mb, backbone.energy_mj,
                        result.labour)

    def refine_tau(self, backbone: Backbone, proposal: float, labour_budget: float, confidence: float = 0.0,
                   latency_budget_ms: float = math.inf) -> TauChoice:
        """The most accurate tau on the search split whose labour meets the budget, from every distinct confidence
        and the proposal, measured exactly as `measure` does (milliseconds for thousands of samples)."""
        return refine_tau(self.sweep(backbone, proposal), proposal, labour_budget, confidence,
                          latency_budget_ms=latency_budget_ms, t_infer_ms=backbone.latency_ms)

    def sweep(self, backbone: Backbone, proposal: float) -> TauSweep:
        """Every threshold's accuracy, labour and people's time on the search split, as `measure` counts them."""
        held = self.search
        return sweep_tau(backbone.logits, held.split.y, held.answers, temperature=backbone.temperature,
                         fusion_lambda=self.config.fusion_lambda, difficulty=self.difficulty,
                         extra_taus=(proposal,), kind=self.config.kind)

    def best_tau(self, backbone: Backbone, proposal: float, demands: Demands, coef: Coefficients,
                 confidence: float) -> TauChoice:
        """The threshold with the best Eq. 14-15 reward on the search split among those meeting L_c and T_d by their
        upper bounds (`search/tau.py` says why not simply the most accurate)."""
        return best_tau(self.sweep(backbone, proposal), proposal, demands, coef, storage_mb=backbone.storage_mb,
                        energy_mj=backbone.energy_mj, t_infer_ms=backbone.latency_ms, confidence=confidence)

    def final(self, plan: dict[str, str], epochs: int) -> Backbone:
        """The winner, fine-tuned longer on the whole training split (plus knowledge), for the test-split numbers."""
        train = self._with_knowledge(self.dataset.train)
        return self._build(plan, train, predict_logits(self.base, train.x), epochs)
