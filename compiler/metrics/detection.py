"""Detection quality: mAP at IoU 0.5 (PASCAL VOC style, all-point interpolation), numpy only.

A prediction is a true positive when it overlaps a not-yet-matched true box of its class with IoU >= 0.5, taken
best score first; AP per class is the area under the interpolated precision/recall curve, and mAP the mean over the
classes that occur in the truth (a class nobody drew cannot be missed, so it does not pull the mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.hdnn.yolo import Detections, box_iou

IOU_THRESHOLD = 0.5


def _matches(predicted: Sequence[Detections], truth: Sequence[np.ndarray], cls: int,
             iou_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, true-positive flags) of every prediction of `cls`, and the number of true boxes of `cls`."""
    scores, hits, total = [], [], 0
    for found, rows in zip(predicted, truth):
        rows = np.asarray(rows, np.float64).reshape(-1, 5)
        gt = rows[rows[:, 4] == cls, :4]
        total += len(gt)
        used = np.zeros(len(gt), bool)
        mine = np.flatnonzero(found.classes == cls)
        for k in mine[np.argsort(-found.scores[mine], kind="stable")]:
            overlap = box_iou(found.boxes[k], gt) if len(gt) else np.zeros(0)
            best = int(np.argmax(overlap)) if len(gt) else -1
            hit = best >= 0 and overlap[best] >= iou_threshold and not used[best]
            if hit:
                used[best] = True
            scores.append(found.scores[k])
            hits.append(hit)
    return np.array(scores, np.float64), np.array(hits, bool), total


def average_precision(scores: np.ndarray, hits: np.ndarray, total: int) -> float:
    """All-point interpolated AP of one class."""
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    recall = np.concatenate([[0.0], tp / total, [1.0]])
    precision = np.concatenate([[1.0], tp / np.arange(1, len(tp) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(np.diff(recall) > 0)
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(predicted: Sequence[Detections], truth: Sequence[np.ndarray], num_classes: int,
                           iou_threshold: float = IOU_THRESHOLD) -> float:
    """mAP@iou over the classes present in `truth` ([k, 5] per image: corners + class); nan with no true box."""
    if len(predicted) != len(truth):
        raise InvalidArgumentError(f"{len(predicted)} predictions for {len(truth)} images: one Detections per image")
    aps = [average_precision(*_matches(predicted, truth, c, iou_threshold)) for c in range(num_classes)]
    present = [ap for ap in aps if not np.isnan(ap)]
    return float(np.mean(present)) if present else float("nan")
