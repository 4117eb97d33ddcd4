"""H-YOLO (detection): a YOLO-style grid output decoded into boxes, a per-image confidence, and human box fusion.

Output form (what the compiler's grid detector emits, float32 [n, S, S, 5 + C]): per cell, channel 0 is the
objectness logit, 1-2 the box centre inside the cell and 3-4 its width and height as a share of the image (all
through a sigmoid), 5.. the class logits. Boxes here are normalised (x_min, y_min, x_max, y_max) in [0, 1] of the
model input; callers scale to pixels with the image size (the hub stores pixel boxes of the sample image).

Confidence (the gate's c): the certainty of the least certain cell. A cell's certainty is |2 p_obj - 1| (1 when
the model is sure there is or is not an object there, 0 at a coin flip), times the top class probability when it
believes there is an object. The minimum, not the mean or the lowest kept box score, because one unsure cell is
enough to make the image's answer wrong, and because a cell *just below* the score threshold (a probably missed
object) must count: the lowest kept score would never see a miss. People redraw the whole image anyway.

Fusion: answers are the people's boxes aggregated by `box_union` ([k, 6]: box, class, support = share of the m
annotators who drew it), or None where no answer arrived (the model's boxes stand, like H-CNN's -1). When people
answered, their view of the image replaces the model's: a human box drawn by at least half of the annotators is
kept (with the people's coordinates, score = support); a minority box is kept only when the model found it too
(same class, IoU >= 0.5), as the model's vote breaks the tie; model boxes that no human drew are dropped (people
saw the whole image and did not mark them). An empty answer means "nothing there" and gives no boxes.

People draw boxes (`boxes`, the `boxes` view of the annotator page), merged by `box_union`; without class
probabilities, labour per sample is estimated from the confidence (`difficulty_from_confidence`); a retrain is due
after 1,000 new human labels (the paper's number for detection: a box label carries less per sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hgen.runtime.calibration import softmax
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.hdnn import KINDS, FusionParams, difficulty_from_confidence
from hgen.runtime.labour import DifficultyEstimator

BOX_FIELDS = 5  # objectness, x, y, w, h
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.5
MATCH_IOU = 0.5
MAJORITY = 0.5
MAX_DETECTIONS = 300  # boxes kept per image after NMS (Ultralytics' max_det): a frame cannot flood its sample


@dataclass(frozen=True)
class Detections:
    """Boxes of one image: normalised corners [k, 4], class ids [k] and scores [k], best first."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.classes[index], self.scores[index])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # overflow-free logistic


def grid(outputs: np.ndarray) -> np.ndarray:
    """Checked float64 view of the raw output [n, S, S, 5 + C]."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim != 4 or out.shape[1] != out.shape[2] or out.shape[3] < BOX_FIELDS + 1:
        raise InvalidInputError(f"H-YOLO outputs must be a grid [n, S, S, 5 + classes], got shape {out.shape}")
    return out


@dataclass(frozen=True)
class Decoded:
    """Per-cell probabilities and boxes: objectness [n, S, S], classes [n, S, S, C], corners [n, S, S, 4]."""

    objectness: np.ndarray
    class_probs: np.ndarray
    boxes: np.ndarray


def decode_grid(outputs: np.ndarray, temperature: float = 1.0) -> Decoded:
    """Cell outputs -> probabilities (objectness and class logits divided by T) and normalised corners."""
    out = grid(outputs)
    size = out.shape[1]
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    cx = (cols + sigmoid(out[..., 1])) / size
    cy = (rows + sigmoid(out[..., 2])) / size
    half_w, half_h = sigmoid(out[..., 3]) / 2, sigmoid(out[..., 4]) / 2
    boxes = np.clip(np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1), 0.0, 1.0)
    return Decoded(sigmoid(out[..., 0] / temperature), softmax(out[..., BOX_FIELDS:], temperature), boxes)


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one corner box [4] with each of `others` [k, 4]."""
    width = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0.0, None)
    inter = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    union = area + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(detections: Detections, iou_threshold: float = NMS_IOU,
        max_detections: int = MAX_DETECTIONS) -> Detections:
    """Greedy per-class non-maximum suppression, best score first, at most `max_detections` kept. Each kept box
    suppresses the later boxes of its class in one array operation: comparing every box with every kept one in
    Python took 0.45 s for a grid of 1,600 firing cells (seconds on a Pi), on every frame."""
    order = np.argsort(-detections.scores, kind="stable")
    boxes, classes = detections.boxes[order], detections.classes[order]
    suppressed = np.zeros(len(order), bool)
    keep: list[int] = []
    for index in range(len(order)):
        if suppressed[index]:
            continue
        keep.append(index)
        if len(keep) >= max_detections:
            break
        later = slice(index + 1, None)
        suppressed[later] |= (classes[later] == classes[index]) & (box_iou(boxes[index], boxes[later])
                                                                   >= iou_threshold)
    return detections.take(order[np.array(keep, dtype=np.int64)])


def decode(outputs: np.ndarray, temperature: float = 1.0, score_threshold: float = SCORE_THRESHOLD,
           iou_threshold: float = NMS_IOU) -> list[Detections]:
    """Boxes per image: cells whose score (objectness x top class probability) reaches the threshold, after NMS."""
    cells = decode_grid(outputs, temperature)
    scores = cells.objectness * cells.class_probs.max(axis=-1)
    classes = cells.class_probs.argmax(axis=-1)
    found = []
    for i in range(scores.shape[0]):
        mask = scores[i] >= score_threshold
        found.append(nms(Detections(cells.boxes[i][mask], classes[i][mask], scores[i][mask]), iou_threshold))
    return found


def cell_certainty(cells: Decoded) -> np.ndarray:
    """[n, S, S]: |2 p_obj - 1|, times the top class probability where the model believes in an object."""
    certainty = np.abs(2.0 * cells.objectness - 1.0)
    top_class = cells.class_probs.max(axis=-1)
    return np.where(cells.objectness >= 0.5, certainty * top_class, certainty)


def human_boxes(answer: np.ndarray | Sequence[Sequence[float]]) -> Detections:
    """An aggregated answer [k, 6] (x_min, y_min, x_max, y_max, class, support) as Detections."""
    rows = np.asarray(answer, dtype=np.float64).reshape(-1, 6)
    if rows.size and (np.any(rows[:, 2] <= rows[:, 0]) or np.any(rows[:, 3] <= rows[:, 1])):
        raise InvalidInputError("human boxes must have x_max > x_min and y_max > y_min")
    return Detections(rows[:, :4], rows[:, 4].astype(np.int64), rows[:, 5])


def fuse_image(model: Detections, people: Detections) -> Detections:
    """The fusion rule of the module docstring for one image whose people answered."""
    keep = []
    for j in range(len(people)):
        agrees = model.classes == people.classes[j]
        found = bool(agrees.any()) and box_iou(people.boxes[j], model.boxes[agrees]).max() >= MATCH_IOU
        if people.scores[j] >= MAJORITY or found:
            keep.append(j)
    fused = people.take(np.array(keep, dtype=np.int64))
    return fused.take(np.argsort(-fused.scores, kind="stable"))


class YOLOKind:
    """The paper's H-YOLO (section 4.1): grid detector + confidence gate + box fusion."""

    name = "yolo"
    proto_enum = "HDNN_KIND_YOLO"
    label = "boxes"
    aggregator = "box_union"
    view = "boxes"
    retrain_threshold = 1000
    score_threshold = SCORE_THRESHOLD

    def output_channels(self, num_labels: int) -> int:
        return BOX_FIELDS + num_labels

    def confidence(self, outputs: np.ndarray, params: FusionParams) -> np.ndarray:
        return cell_certainty(decode_grid(outputs, params.temperature)).min(axis=(1, 2))

    def predict(self, outputs: np.ndarray, params: FusionParams) -> list[Detections]:
        return decode(outputs, params.temperature, self.score_threshold)

    def fuse(self, outputs: np.ndarray, answers: Sequence[np.ndarray | None], params: FusionParams) -> list[Detections]:
        predicted = self.predict(outputs, params)
        if len(answers) != len(predicted):
            raise InvalidInputError(f"{len(predicted)} model outputs but {len(answers)} answers")
        return [own if answer is None else fuse_image(own, human_boxes(answer))
                for own, answer in zip(predicted, answers)]

    def difficulty(self, outputs: np.ndarray, confidence: np.ndarray, params: FusionParams,
                   estimator: DifficultyEstimator) -> np.ndarray:
        return difficulty_from_confidence(confidence)


KINDS.add("yolo", YOLOKind())
