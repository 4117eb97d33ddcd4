"""Enhancement training (paper section 4.2.2): distil the current model plus human knowledge into a new one.

Targets: on original training images, the current model's logits (what it knows); on human-labelled images, the
current model's logits with the human class lifted `margin` above the top logit — the human label mapped to the
model's output form, keeping the model's view of the other classes. Soft targets at a high temperature, plus the
hard labels (Hinton's loss, `hgen.compiler.train.distill`). The fine-tune starts from the deployed weights, so
the compression plan (masks, factorised layers) and tau are kept; only the temperature is re-calibrated.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data import Dataset, Split
from hgen.compiler.data.lazy import concat
from hgen.compiler.train import DistillConfig, calibrate, distill, predict_logits
from hgen.hub.config import RetrainConfig
from hgen.hub.retrain.data import HumanSet
from hgen.hub.retrain.style import Styled, in_field_style


@dataclass(frozen=True)
class Enhanced:
    """The fine-tuned model, its re-fitted temperature, and how long training took."""

    model: Any
    temperature: float
    seconds: float
    train_samples: int
    style: Mapping[str, float] | None = None  # the field's style on the originals (`Styled.summary`), if any


def human_logits(teacher_logits: np.ndarray, labels: np.ndarray, margin: float) -> np.ndarray:
    """Lift each human class `margin` above the row's top logit; other logits stay the model's."""
    out = np.array(teacher_logits, dtype=np.float64, copy=True)
    rows = np.arange(out.shape[0])
    out[rows, labels] = out.max(axis=1) + margin
    return out


def training_set(teacher: Any, data: Dataset, human: HumanSet, config: RetrainConfig,
                 ) -> tuple[Split, np.ndarray, Styled]:
    """Original samples with the teacher's logits (of the clean image; a share is then rendered in the field's
    style, `hgen.hub.retrain.style`) plus each human sample `human_repeat` times."""
    original = data.train.take(config.original_samples)
    styled = in_field_style(original.x, human.x, config.field, config.seed)
    logits = [styled.reorder(predict_logits(teacher, original.x))]
    xs, ys = [styled.x], [styled.reorder(original.y)]
    if len(human):
        mapped = human_logits(predict_logits(teacher, human.x), human.y, config.human_margin)
        xs += [human.x] * config.human_repeat
        ys += [human.y] * config.human_repeat
        logits += [mapped] * config.human_repeat
    return Split(concat(xs), np.concatenate(ys)), np.concatenate(logits), styled


def distill_config(config: RetrainConfig) -> DistillConfig:
    """The enhancement loss and schedule a retrain's settings ask for (Hinton's loss, `hgen.compiler.train`)."""
    return DistillConfig(epochs=config.epochs, temperature=config.temperature, alpha=config.alpha,
                         learning_rate=config.learning_rate, seed=config.seed)


def enhance(keras_path: str | Path, data: Dataset, human: HumanSet, config: RetrainConfig) -> Enhanced:
    """Fine-tune a fresh copy of the deployed model; the deployed one (the teacher) is never modified."""
    from hgen.compiler.models import load_model_file

    teacher = load_model_file(keras_path)
    student = load_model_file(keras_path)
    split, logits, styled = training_set(teacher, data, human, config)
    start = time.perf_counter()
    distill(student, logits, split, distill_config(config))
    temperature = calibrate(student, data.val)
    return Enhanced(student, float(temperature), time.perf_counter() - start, len(split), styled.summary())
