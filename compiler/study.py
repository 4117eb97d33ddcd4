"""The H-CNN study (paper Fig. 11 and 13a): train a backbone, calibrate it, ask a simulated crowd, sweep tau.

`prepare_hcnn` does the expensive part once (training, calibration, crowd answers for every test sample,
difficulty fit, latency measurement); `tau_sweep` and `evaluate_at` are then cheap, pure numpy through the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from hgen.compiler.data import Dataset, load_dataset, require_splits
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.metrics import (
    HDNNEvaluation,
    ask_crowd,
    energy_mj,
    evaluate_hdnn,
    fit_difficulty,
    model_costs,
    storage_mb,
)
from hgen.compiler.models import build_classifier
from hgen.compiler.metrics.latency import litert_latency_ms
from hgen.compiler.train import TrainConfig, calibrate, predict_logits, train_classifier
from hgen.hub.crowd import CrowdAnswers, SimulatedCrowd
from hgen.runtime.calibration import expected_calibration_error, softmax
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.hdnn import FUSION_LAMBDA_DEFAULT, FusionLambda, check_tau
from hgen.runtime.labour import DifficultyEstimator


class StudyConfig(StrictModel):
    """What to train and whom to ask."""

    dataset: str = Field("fashion-mnist:lowres", title="Dataset spec, e.g. fashion-mnist:lowres or D5")
    model: str = Field("lenet5", title="Backbone from the model zoo")
    epochs: int = Field(5, ge=1, le=100, title="Training epochs")
    m: int = Field(3, ge=1, le=4, title="Annotators per sample (the paper allows up to 4)")
    annotator_accuracy: float = Field(0.9, ge=0.0, le=1.0, title="Accuracy of each simulated annotator")
    fusion_lambda: FusionLambda = FUSION_LAMBDA_DEFAULT
    seed: int = Field(0, title="Seed of splits, training, noise and the crowd")
    limit: int | None = Field(None, ge=10, title="Cap on each split's size (quick runs); None = full")
    data_root: str | None = Field(None, title="Explicit dataset folder, tried before $HGEN_DATA")


def study_config(**values: Any) -> StudyConfig:
    """Validate study settings, reporting every bad key at once."""
    return parse_config(StudyConfig, values, source="study settings", error=InvalidArgumentError)


@dataclass(frozen=True)
class PreparedHCNN:
    """A trained, calibrated backbone with the crowd's answers to every test sample."""

    config: StudyConfig
    dataset: Dataset
    model: Any
    temperature: float
    ece_before: float
    ece_after: float
    test_logits: np.ndarray
    answers: CrowdAnswers
    difficulty: DifficultyEstimator
    t_infer_ms: float
    train_seconds: float

    @property
    def origin_accuracy(self) -> float:
        return float(np.mean(self.test_logits.argmax(axis=1) == self.dataset.test.y))

    def system_metrics(self) -> dict[str, float]:
        costs = model_costs(self.model)
        return {"params": float(self.model.count_params()), "macs": float(costs.macs),
                "storage_mb": storage_mb(costs), "energy_mj": energy_mj(costs)}


def prepare_hcnn(config: StudyConfig, dataset: Dataset | None = None,
                 log: Any = lambda message: None) -> PreparedHCNN:
    """Train, calibrate (Eq. 2), fit the difficulty estimator (Eq. 3) and collect the crowd's answers."""
    data = dataset or load_dataset(config.dataset, seed=config.seed, limit=config.limit, root=config.data_root)
    require_splits(data)
    log(f"dataset {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test from {data.origin}")
    model = build_classifier(config.model, data.input_shape, data.num_classes)
    seconds = train_classifier(model, data.train, config=TrainConfig(epochs=config.epochs, seed=config.seed))
    log(f"trained {config.model} for {config.epochs} epochs in {seconds:.1f} s")
    temperature = calibrate(model, data.val)
    test_logits = predict_logits(model, data.test.x)
    crowd = SimulatedCrowd.uniform(config.m, config.annotator_accuracy, data.num_classes, seed=config.seed)
    difficulty = fit_difficulty(crowd, predict_logits(model, data.val.x), data.val.y, config.m, temperature)
    return PreparedHCNN(
        config=config, dataset=data, model=model, temperature=temperature,
        ece_before=expected_calibration_error(softmax(test_logits), data.test.y),
        ece_after=expected_calibration_error(softmax(test_logits, temperature), data.test.y),
        test_logits=test_logits,
        answers=ask_crowd(crowd, test_logits, data.test.y, config.m, temperature),
        difficulty=difficulty, t_infer_ms=litert_latency_ms(model), train_seconds=seconds,
    )


def evaluate_at(prepared: PreparedHCNN, tau: float) -> HDNNEvaluation:
    """A/T/L of the H-CNN at one threshold on the test split."""
    return evaluate_hdnn(prepared.test_logits, prepared.dataset.test.y, prepared.answers, tau=tau,
                         temperature=prepared.temperature, fusion_lambda=prepared.config.fusion_lambda,
                         difficulty=prepared.difficulty, t_infer_ms=prepared.t_infer_ms)


def tau_grid(start: float = 0.1, stop: float = 0.9, step: float = 0.1) -> list[float]:
    if step <= 0:
        raise InvalidArgumentError("the tau step must be > 0")
    count = int(round((stop - start) / step)) + 1
    return [check_tau(round(start + i * step, 6)) for i in range(count)]


def tau_sweep(prepared: PreparedHCNN, taus: list[float]) -> list[HDNNEvaluation]:
    return [evaluate_at(prepared, tau) for tau in taus]
