"""Training, distillation fine-tuning, logits and latency of Keras classifiers (CPU-friendly defaults).

Distillation (Hinton et al.): loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T))
+ (1 - alpha) * CE(labels, student). Teacher soft targets are computed once, not per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.compiler.data import Split
from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.calibration import fit_temperature, softmax


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings; defaults train LeNet-5 on FashionMNIST to ~90% in a few epochs on 2 cores."""

    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    verbose: int = 0


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge-distillation fine-tune settings."""

    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0
    verbose: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise InvalidArgumentError("distillation needs temperature > 0 and alpha in [0, 1]")


def train_classifier(model: Any, train: Split, val: Split | None = None, config: TrainConfig = TrainConfig()) -> float:
    """Train on hard labels; returns wall seconds."""
    import keras

    keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(train.x, train.y, batch_size=config.batch_size, epochs=config.epochs, verbose=config.verbose,
              validation_data=(val.x, val.y) if val is not None else None, shuffle=True)
    return time.perf_counter() - start


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def accuracy(model: Any, split: Split) -> float:
    return float(np.mean(predict_logits(model, split.x).argmax(axis=1) == split.y))


def _distillation_loss(num_classes: int, temperature: float, alpha: float) -> Any:
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        soft, hard = y_true[:, :num_classes], y_true[:, num_classes:]
        log_student_t = ops.log_softmax(y_pred / temperature, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, 1e-12, 1.0)) - log_student_t), axis=-1)
        ce = -ops.sum(hard * ops.log_softmax(y_pred, axis=-1), axis=-1)
        return alpha * temperature**2 * kl + (1.0 - alpha) * ce

    return loss


def distill(student: Any, teacher_logits: np.ndarray, data: Split, config: DistillConfig = DistillConfig()) -> float:
    """Fine-tune `student` towards the teacher's soft targets and the true labels; returns wall seconds."""
    import keras

    if teacher_logits.shape[0] != len(data):
        raise InvalidArgumentError(f"{teacher_logits.shape[0]} teacher outputs for {len(data)} samples")
    num_classes = teacher_logits.shape[1]
    targets = np.concatenate([softmax(teacher_logits, config.temperature),
                              np.eye(num_classes)[data.y]], axis=1).astype(np.float32)
    keras.utils.set_random_seed(config.seed)
    student.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                    loss=_distillation_loss(num_classes, config.temperature, config.alpha))
    start = time.perf_counter()
    student.fit(data.x, targets, batch_size=config.batch_size, epochs=config.epochs, verbose=config.verbose,
                shuffle=True)
    return time.perf_counter() - start


def calibrate(model: Any, val: Split) -> float:
    """Temperature fitted on the validation split (Eq. 2)."""
    return fit_temperature(predict_logits(model, val.x), val.y)
