"""H-YOLO retraining: the people's boxes become grid targets, distilled with the deployed model's own grid on the
original data; acceptance compares mAP@0.5.

Human labels mapped to the model's output form: for each human-labelled image, the boxes the device's fusion rule
(`hgen.runtime.hdnn.yolo.fuse_image`) keeps from the people's `box_union` aggregate and the deployed model's own
boxes, encoded as the grid the model emits (objectness 1 in the cell of each box centre, its box and one-hot class;
objectness 0 elsewhere, since people saw the whole image). Original data: `alpha` x the teacher's grid
(objectness and class probabilities at T = 1, its boxes) + (1 - alpha) x the true grid; true boxes win in object
cells. (`temperature` and `human_margin` of RetrainConfig are H-CNN's logit settings and do not apply here: a
softened objectness is a different label, not a softer one.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data.detection import DetectionDataset, load_detection_dataset
from hgen.compiler.metrics.detection import mean_average_precision
from hgen.compiler.models.grid_detector import (DetectorTrainConfig, calibrate_detector, encode_targets,
                                                fit_targets, predict_grid, soft_targets)
from hgen.hub.config import RetrainConfig
from hgen.hub.retrain.data import decode_many, fitting, labels_in_range, to_input
from hgen.hub.retrain.enhance import Enhanced
from hgen.hub.retrain.kinds import RETRAIN_KINDS
from hgen.hub.retrain.labels import BoxSample, box_samples
from hgen.hub.retrain.records import RetrainStore
from hgen.hub.retrain.style import in_field_style
from hgen.runtime.hdnn.yolo import MAJORITY, Detections, decode as decode_boxes, fuse_image, human_boxes

EVAL_SCORE_THRESHOLD = 0.05  # mAP ranks every plausible box; the device's 0.5 would cut the precision/recall curve


@dataclass(frozen=True)
class HumanBoxes:
    """Human-labelled images [n, H, W, C] with the aggregated boxes per image: [k, 6] normalised corners, class,
    support (share of annotators who drew the box)."""

    x: np.ndarray
    answers: tuple[np.ndarray, ...]
    sample_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, mask: np.ndarray) -> HumanBoxes:
        index = np.flatnonzero(mask)
        return HumanBoxes(self.x[index], tuple(self.answers[i] for i in index),
                          tuple(self.sample_ids[i] for i in index))

    @property
    def boxes(self) -> tuple[np.ndarray, ...]:
        """What a majority of the annotators drew, [k, 5]: the truth the held-out check scores against."""
        return tuple(a[a[:, 5] >= MAJORITY, :5] for a in self.answers)


def normalised(sample: BoxSample) -> np.ndarray:
    """Pixel boxes of the stored image -> [0, 1] corners (the model input may have another size)."""
    scale = np.array([sample.width, sample.height, sample.width, sample.height], np.float64)
    rows = sample.boxes.copy()
    rows[:, :4] = np.clip(rows[:, :4] / scale, 0.0, 1.0)
    return rows


def human_targets(teacher_outputs: np.ndarray, human: HumanBoxes, grid: int, num_classes: int) -> np.ndarray:
    """The fused boxes (device rule) of each human-labelled image as grid targets."""
    own = decode_boxes(teacher_outputs)
    fused: list[Detections] = [fuse_image(o, human_boxes(a)) for o, a in zip(own, human.answers)]
    rows = [np.column_stack([f.boxes, f.classes]) if len(f) else np.zeros((0, 5)) for f in fused]
    return encode_targets(rows, grid, num_classes)


def original_targets(teacher_outputs: np.ndarray, truth: tuple[np.ndarray, ...], num_classes: int,
                     alpha: float) -> np.ndarray:
    """alpha x teacher grid + (1 - alpha) x true grid; boxes and classes of true object cells come from the truth."""
    teacher = soft_targets(teacher_outputs)
    hard = encode_targets(truth, teacher.shape[1], num_classes)
    mixed = alpha * teacher + (1.0 - alpha) * hard
    is_object = hard[..., :1] > 0
    mixed[..., 1:5] = np.where(is_object, hard[..., 1:5], teacher[..., 1:5])
    return mixed.astype(np.float32)


class YOLORetrain:
    name = "yolo"
    metric = "mAP@0.5"
    supports_research = False  # the compile search takes classifiers

    def load_data(self, spec: str, *, seed: int, limit: int | None) -> DetectionDataset:
        return load_detection_dataset(spec, seed=seed, limit=limit)

    def human(self, store: RetrainStore, model_name: str, up_to: float, data: DetectionDataset,
              newest: int | None = None) -> HumanBoxes:
        samples = box_samples(store.kb, model_name, up_to, newest)
        keep = labels_in_range([s.sample_id for s in samples], [normalised(s)[:, 4] for s in samples],
                               data.num_classes)
        samples = [s for s, ok in zip(samples, keep) if ok]
        x, readable = decode_many(samples, data.input_shape, *fitting(data))
        samples = [s for s, ok in zip(samples, readable) if ok]
        answers = tuple(to_input(normalised(s), s.width, s.height, data) for s in samples)
        return HumanBoxes(x, answers, tuple(s.sample_id for s in samples))

    def enhance(self, keras_path: str | Path, data: DetectionDataset, human: HumanBoxes,
                config: RetrainConfig) -> Enhanced:
        from hgen.compiler.models import load_model_file

        teacher, student = load_model_file(keras_path), load_model_file(keras_path)
        original = data.train.take(config.original_samples)
        styled = in_field_style(original.x, human.x, config.field, config.seed)
        xs = [styled.x]  # targets: the clean images'
        targets = [styled.reorder(original_targets(predict_grid(teacher, original.x), original.boxes,
                                                   data.num_classes, config.alpha))]
        if len(human):
            mapped = human_targets(predict_grid(teacher, human.x), human, targets[0].shape[1], data.num_classes)
            xs += [human.x] * config.human_repeat
            targets += [mapped] * config.human_repeat
        x, y = np.concatenate(xs), np.concatenate(targets)
        start = time.perf_counter()
        fit_targets(student, x, y, DetectorTrainConfig(epochs=config.epochs, learning_rate=config.learning_rate,
                                                       seed=config.seed))
        temperature = calibrate_detector(student, data.val, data.num_classes)
        return Enhanced(student, float(temperature), time.perf_counter() - start, len(x), styled.summary())

    def score(self, model: Any, labelled: Any) -> float:
        if not len(labelled):
            return float("nan")
        found = decode_boxes(predict_grid(model, labelled.x), score_threshold=EVAL_SCORE_THRESHOLD)
        num_classes = int(model.outputs[0].shape[-1]) - 5
        return mean_average_precision(found, labelled.boxes, num_classes)


RETRAIN_KINDS.add("yolo", YOLORetrain())
