"""What a retrain does differently per H-DNN kind, one file each (`cnn.py`, `yolo.py`), found by kind name.

The pipeline's steps are the same for every kind (collect, split, filter, enhance, accept, re-lower, publish); a
kind says where its original data comes from, how people's labels become training targets in the model's output
form, how enhancement training runs, and which number the acceptance check compares. Adding a kind is adding a
file with `RETRAIN_KINDS.add(name, ...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hgen.hub.config import RetrainConfig
from hgen.hub.retrain.enhance import Enhanced
from hgen.hub.retrain.records import RetrainStore
from hgen.runtime.registry import Registry


class LabelledImages(Protocol):
    """Images with labels of some kind (a split of the original data or of the human-labelled set)."""

    x: np.ndarray

    def __len__(self) -> int: ...


class HumanLabels(LabelledImages, Protocol):
    """The human-labelled set: images, labels and the sample ids the held-out split is fixed by."""

    sample_ids: tuple[str, ...]

    def subset(self, mask: np.ndarray) -> HumanLabels: ...


class OriginalData(Protocol):
    """The model's original data: train / val / test splits and the input shape."""

    train: Any
    val: Any
    test: Any
    labels: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]: ...


class RetrainKind(Protocol):
    """The kind-specific steps of a retrain."""

    name: str
    metric: str  # what `score` measures, named in acceptance results and refusals
    supports_research: bool  # a retrain may re-run the model's hgen-compile search (the compiler searches it)

    def load_data(self, spec: str, *, seed: int, limit: int | None) -> OriginalData:
        """The original train / validation / test data of the model."""

    def human(self, store: RetrainStore, model_name: str, up_to: float, data: OriginalData,
              newest: int | None = None) -> HumanLabels:
        """The human labels of the model up to the run's cutoff (the `newest` of them, when set), decoded to model
        inputs."""

    def enhance(self, keras_path: str | Path, data: OriginalData, human: HumanLabels,
                config: RetrainConfig) -> Enhanced:
        """Enhancement training of a copy of the deployed model, and its re-fitted temperature."""

    def score(self, model: Any, labelled: LabelledImages) -> float:
        """The acceptance metric of `model` on a labelled set (higher is better; nan when it is empty)."""


def fused_scorer(kind: RetrainKind) -> Any:
    """The kind's expected-accuracy-with-people estimate `(model, temperature, tau, labelled, human_accuracy)`,
    or None for kinds without one (the acceptance check then compares model-only scores alone)."""
    return getattr(kind, "fused_score", None)


def sample_scorer(kind: RetrainKind) -> Any:
    """The kind's per-sample acceptance score `(model, labelled) -> array` whose mean is `score`, or None for kinds
    whose metric is not a mean over samples (mAP): the acceptance check then judges by the tolerance alone."""
    return getattr(kind, "sample_scores", None)


RETRAIN_KINDS: Registry[RetrainKind] = Registry("retrain kind", package=__name__)


def get_retrain_kind(name: str) -> RetrainKind:
    return RETRAIN_KINDS.get(name)


def retrain_kind_names() -> list[str]:
    return RETRAIN_KINDS.names()
