"""H-CNN retraining: a human class is lifted above the model's top logit (the model's output form), distilled with
the teacher's logits on original data (`hgen.hub.retrain.enhance`); acceptance compares model-only accuracy and the
expected accuracy with people, both through the runtime kind's own answer, confidence and gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data import Dataset, load_dataset
from hgen.compiler.train import predict_logits
from hgen.hub.config import RetrainConfig
from hgen.hub.retrain.data import HumanSet, fitting, human_set
from hgen.hub.retrain.enhance import Enhanced, enhance
from hgen.hub.retrain.kinds import RETRAIN_KINDS
from hgen.hub.retrain.records import RetrainStore
from hgen.runtime.hdnn import FusionParams, get_kind, needs_human


class CNNRetrain:
    name = "cnn"
    metric = "accuracy"
    supports_research = True

    def load_data(self, spec: str, *, seed: int, limit: int | None) -> Dataset:
        return load_dataset(spec, seed=seed, limit=limit)

    def human(self, store: RetrainStore, model_name: str, up_to: float, data: Dataset,
              newest: int | None = None) -> HumanSet:
        return human_set(store.labelled_samples(model_name, up_to, newest), data.input_shape, data.num_classes,
                         *fitting(data))

    def enhance(self, keras_path: str | Path, data: Dataset, human: HumanSet, config: RetrainConfig) -> Enhanced:
        return enhance(keras_path, data, human, config)

    def score(self, model: Any, labelled: Any) -> float:
        return float(np.mean(self.sample_scores(model, labelled))) if len(labelled) else float("nan")

    def sample_scores(self, model: Any, labelled: Any) -> np.ndarray:
        """1 where the model's answer is right, per sample (`score` is their mean; the acceptance check's noise
        margin pairs them between the deployed and the new model)."""
        if not len(labelled):
            return np.zeros(0)
        answers = get_kind(self.name).predict(predict_logits(model, labelled.x), FusionParams())
        return (answers == labelled.y).astype(np.float64)

    def fused_score(self, model: Any, temperature: float, tau: float, labelled: Any, human_accuracy: float) -> float:
        """Expected accuracy of the H-CNN with people (the mean of `fused_outcomes`, weighted by `labelled.weights`
        when it has them: a `FieldSet`, whose audited frames stand for 1 / audit_share frames each). A retrain that
        makes the model confidently wrong where people used to be asked scores lower here, even if model-only
        accuracy rose."""
        if not len(labelled):
            return float("nan")
        outcomes = fused_outcomes(model, temperature, tau, labelled, human_accuracy)
        return float(np.average(outcomes, weights=getattr(labelled, "weights", None)))


def fused_outcomes(model: Any, temperature: float, tau: float, labelled: Any, human_accuracy: float) -> np.ndarray:
    """Each sample's expected outcome with people: the runtime's calibrated confidence and gate decide which go to
    people (right with `human_accuracy`); the model answers the rest (1 or 0 as it is right)."""
    kind, params, logits = get_kind("cnn"), FusionParams(temperature), predict_logits(model, labelled.x)
    gated = needs_human(kind.confidence(logits, params), tau)
    right = kind.predict(logits, params) == labelled.y
    return np.where(gated, human_accuracy, right.astype(np.float64))


RETRAIN_KINDS.add("cnn", CNNRetrain())
