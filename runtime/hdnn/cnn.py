"""H-CNN (classification): confidence = max softmax(z / T); fusion = softmax(z / T) + lambda * sum one-hot answers.

People answer with a class (`class_id`, the `class` view of the annotator page); the hub's configured class
aggregator (majority by default) merges them; labour per sample comes from the compiler's fitted difficulty
estimator on the calibrated probabilities; a retrain is due after 200 new human labels (the paper's number).

Answers are an int array [n, m] of class indices; -1 means "no answer" (skip, can't tell, expired) and adds nothing,
so a partial reply fuses what did arrive.
"""

from __future__ import annotations

import numpy as np

from hgen.runtime.calibration import softmax
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.hdnn import KINDS, FusionParams
from hgen.runtime.labour import DifficultyEstimator

NO_ANSWER = -1


def _logits(outputs: np.ndarray) -> np.ndarray:
    logits = np.asarray(outputs, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InvalidInputError(f"H-CNN outputs must be logits [n, classes>=2], got shape {logits.shape}")
    return logits


def vote_counts(answers: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample count of each class among the annotators' answers: [n, classes]."""
    answers = np.asarray(answers, dtype=np.int64)
    if answers.ndim == 1:
        answers = answers[:, None]
    if answers.size and (answers.max() >= num_classes or answers.min() < NO_ANSWER):
        raise InvalidInputError(f"answers must be class indices in 0..{num_classes - 1} or {NO_ANSWER}")
    counts = np.zeros((answers.shape[0], num_classes))
    rows, cols = np.nonzero(answers >= 0)
    np.add.at(counts, (rows, answers[rows, cols]), 1.0)
    return counts


class CNNKind:
    """The paper's H-CNN (section 4.1)."""

    name = "cnn"
    proto_enum = "HDNN_KIND_CNN"
    label = "class_id"
    aggregator = "majority"
    view = "class"
    retrain_threshold = 200

    def output_channels(self, num_labels: int) -> int:
        return num_labels

    def probabilities(self, outputs: np.ndarray, params: FusionParams) -> np.ndarray:
        return softmax(_logits(outputs), params.temperature)

    def confidence(self, outputs: np.ndarray, params: FusionParams) -> np.ndarray:
        return self.probabilities(outputs, params).max(axis=1)

    def predict(self, outputs: np.ndarray, params: FusionParams) -> np.ndarray:
        return _logits(outputs).argmax(axis=1)

    def fused_scores(self, outputs: np.ndarray, answers: np.ndarray, params: FusionParams) -> np.ndarray:
        probs = self.probabilities(outputs, params)
        counts = vote_counts(answers, probs.shape[1])
        if counts.shape[0] != probs.shape[0]:
            raise InvalidInputError(f"{probs.shape[0]} model outputs but {counts.shape[0]} rows of answers")
        return probs + params.fusion_lambda * counts

    def fuse(self, outputs: np.ndarray, answers: np.ndarray, params: FusionParams) -> np.ndarray:
        return self.fused_scores(outputs, answers, params).argmax(axis=1)

    def difficulty(self, outputs: np.ndarray, confidence: np.ndarray, params: FusionParams,
                   estimator: DifficultyEstimator) -> np.ndarray:
        """The fitted estimator on the calibrated probabilities (margin, entropy, top-1), as the search counted it."""
        return estimator.difficulty(self.probabilities(outputs, params))


KINDS.add("cnn", CNNKind())
