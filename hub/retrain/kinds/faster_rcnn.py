"""H-Faster-RCNN retraining (paper 4.2.2): the people's stored attention regions become a Gaussian mixture per image
(k-means++ initialisation, then EM; components by AIC), the device's fusion turns its components into boxes, and
the detector is fine-tuned on them beside the original data; acceptance compares mAP@0.5.

Human labels mapped to the model's output form: for each region-labelled image, every annotator's stored regions
(not only the reply's aggregate: the knowledge base keeps them all) are points (cx, cy, w, h) of a mixture fitted
here with k-means++ then EM; the runtime's `fuse_image` places prior anchors at its components and the deployed
model's second stage scores them, exactly as the device would; those boxes (head box and class) are the targets.
Regions carry no class, so the class comes from the deployed model: people teach where objects are, and where they
are not (slots no region covers are background). Original data: the true boxes (hard targets; the two-stage loss
has no soft form yet, so `alpha` and `temperature` of RetrainConfig do not apply here).

The held-out human set has no classes either: it is scored class-agnostically (every box one class) against the
people's regions, at IoU 0.5: does the model find where people pointed; the test split is scored with its classes.
An image where people marked nothing ("nothing uncertain here") is fused as the device fuses it: the teacher's own
boxes are its targets, and it is left out of the held-out score (it says the answer stands, not what is there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data.detection import DetectionDataset, load_detection_dataset
from hgen.compiler.metrics.detection import mean_average_precision
from hgen.hub.aggregators.region_gmm import MAX_COMPONENTS, covariance_floor
from hgen.hub.config import RetrainConfig
from hgen.hub.kb.models import Reply, Sample
from hgen.hub.retrain.data import decode_many, fitting, to_input
from hgen.hub.retrain.enhance import Enhanced
from hgen.hub.retrain.kinds import RETRAIN_KINDS
from hgen.hub.retrain.records import RetrainStore, agreed_drawing, labelled_rows
from hgen.hub.retrain.style import in_field_style
from hgen.protos import hub_pb2
from hgen.protos.kinds import wire_kinds
from hgen.runtime.hdnn import FusionParams, get_kind
from hgen.runtime.hdnn.yolo import Detections

EVAL_SCORE_THRESHOLD = 0.05  # mAP ranks every plausible box; the device's 0.5 would cut the precision/recall curve


@dataclass(frozen=True)
class RegionSample:
    """A region-labelled sample: the stored image and every annotator's regions [k, 5] in pixels (corners, weight)."""

    sample_id: str
    regions: np.ndarray
    image_format: int
    height: int
    width: int
    channels: int
    image: bytes


def _regions(payload: bytes) -> np.ndarray:
    reply = hub_pb2.SampleReply.FromString(payload)
    rows = [(r.x_min, r.y_min, r.x_max, r.y_max, r.weight or 1.0) for a in reply.answers
            if a.WhichOneof("label") == "regions" for r in a.regions.regions]
    return np.array(rows, np.float64).reshape(-1, 5)


def region_samples(store: RetrainStore, name: str, up_to: float, newest: int | None = None) -> list[RegionSample]:
    kinds = wire_kinds(lambda kind: kind.label == "regions")
    rows = labelled_rows(store.kb, name, up_to, Reply.payload, Sample.hdnn_kind.in_(kinds), agreed_drawing(),
                         newest=newest)
    return [RegionSample(r[0], _regions(r[1]), *r[2:]) for r in rows]


def kb_mixture(regions: np.ndarray, seed: int = 0) -> np.ndarray:
    """Paper 4.2.2: the regions' Gaussian mixture, initialised by k-means++ and refined by EM, components by AIC;
    its components as normalised regions [k, 5] (corners, mixture weight). No region: no component."""
    from sklearn.mixture import GaussianMixture

    if len(regions) < 2:
        return regions.copy()
    points = np.column_stack([(regions[:, 0] + regions[:, 2]) / 2, (regions[:, 1] + regions[:, 3]) / 2,
                              regions[:, 2] - regions[:, 0], regions[:, 3] - regions[:, 1]])
    fits = []
    for k in range(1, min(MAX_COMPONENTS, len(points)) + 1):
        model = GaussianMixture(k, covariance_type="diag", init_params="k-means++", reg_covar=covariance_floor(points),
                                random_state=seed).fit(points)
        fits.append((model.aic(points), k, model))
    best = min(fits, key=lambda item: (item[0], item[1]))[2]
    (cx, cy, w, h), weights = best.means_.T, best.weights_
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, weights])


@dataclass(frozen=True)
class HumanRegions:
    """Region-labelled images [n, H, W, C] and per image the mixture's components [k, 5] (normalised corners,
    weight). Scored class-agnostically (module docstring)."""

    x: np.ndarray
    regions: tuple[np.ndarray, ...]
    sample_ids: tuple[str, ...]
    class_agnostic = True

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, mask: np.ndarray) -> HumanRegions:
        index = np.flatnonzero(mask)
        return HumanRegions(self.x[index], tuple(self.regions[i] for i in index),
                            tuple(self.sample_ids[i] for i in index))

    @property
    def boxes(self) -> tuple[np.ndarray, ...]:
        """The people's regions as class-0 boxes [k, 5]: the truth the held-out check scores against."""
        return tuple(np.column_stack([r[:, :4], np.zeros(len(r))]) for r in self.regions)


def human_targets(teacher: Any, human: HumanRegions, temperature: float) -> tuple[np.ndarray, ...]:
    """The device's fusion of each image's regions with the teacher's second stage: boxes [k, 5] per image (an
    image where people marked nothing keeps the teacher's own boxes, as the device keeps its proposals)."""
    from hgen.compiler.models.two_stage_detector import predict_slots

    outputs = predict_slots(teacher, human.x)
    fused: list[Detections] = get_kind("faster_rcnn").fuse(outputs, list(human.regions), FusionParams(temperature))
    return tuple(np.column_stack([f.boxes, f.classes]) if len(f) else np.zeros((0, 5)) for f in fused)


class FasterRCNNRetrain:
    name = "faster_rcnn"
    metric = "mAP@0.5"
    supports_research = False  # the compile search takes classifiers

    def load_data(self, spec: str, *, seed: int, limit: int | None) -> DetectionDataset:
        return load_detection_dataset(spec, seed=seed, limit=limit)

    def human(self, store: RetrainStore, model_name: str, up_to: float, data: DetectionDataset,
              newest: int | None = None) -> HumanRegions:
        samples = region_samples(store, model_name, up_to, newest)
        x, readable = decode_many(samples, data.input_shape, *fitting(data))
        samples = [s for s, ok in zip(samples, readable) if ok]
        regions = []
        for s in samples:
            rows = s.regions.copy()
            rows[:, :4] = np.clip(rows[:, :4] / [s.width, s.height, s.width, s.height], 0.0, 1.0)
            rows = to_input(rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])], s.width, s.height, data)
            regions.append(kb_mixture(rows))
        return HumanRegions(x, tuple(regions), tuple(s.sample_id for s in samples))

    def enhance(self, keras_path: str | Path, data: DetectionDataset, human: HumanRegions,
                config: RetrainConfig) -> Enhanced:
        from hgen.compiler.models import load_model_file
        from hgen.compiler.models.two_stage_detector import (TwoStageTrainConfig, calibrate_two_stage,
                                                             encode_targets, fit_targets)

        teacher, student = load_model_file(keras_path), load_model_file(keras_path)
        grid = int(student.outputs[0].shape[1])
        original = data.train.take(config.original_samples)
        styled = in_field_style(original.x, human.x, config.field, config.seed)
        xs, boxes = [styled.x], list(styled.reorder(original.boxes))
        if len(human):
            temperature = calibrate_two_stage(teacher, data.val, data.num_classes)
            xs += [human.x] * config.human_repeat
            boxes += list(human_targets(teacher, human, temperature)) * config.human_repeat
        x, y = np.concatenate(xs), encode_targets(boxes, grid, data.num_classes)
        start = time.perf_counter()
        fit_targets(student, x, y, TwoStageTrainConfig(epochs=config.epochs, learning_rate=config.learning_rate,
                                                       seed=config.seed))
        temperature = calibrate_two_stage(student, data.val, data.num_classes)
        return Enhanced(student, float(temperature), time.perf_counter() - start, len(x), styled.summary())

    def score(self, model: Any, labelled: Any) -> float:
        from hgen.compiler.models.two_stage_detector import num_classes_of, predict_slots

        if not len(labelled):
            return float("nan")
        found = get_kind(self.name).detect(predict_slots(model, labelled.x), FusionParams(), EVAL_SCORE_THRESHOLD)
        if getattr(labelled, "class_agnostic", False):  # only where people marked something: "nothing
            # uncertain here" says the model's answer stands, not that the image is empty
            marked = [i for i, r in enumerate(labelled.regions) if len(r)]
            if not marked:
                return float("nan")
            found = [Detections(found[i].boxes, np.zeros(len(found[i]), np.int64), found[i].scores) for i in marked]
            return mean_average_precision(found, [labelled.boxes[i] for i in marked], 1)
        return mean_average_precision(found, labelled.boxes, num_classes_of(model))


RETRAIN_KINDS.add("faster_rcnn", FasterRCNNRetrain())
