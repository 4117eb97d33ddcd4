"""The two-stage detector trains on a user's YOLO data set read through compiler/data (issue 21): colour 96x96
canvases written in the Ultralytics layout (`write_yolo_set`), loaded only through `load_detection_dataset`, a model
built at that input (three channels, a 12x12 grid), and the runtime's kind reads its outputs."""

from __future__ import annotations

import numpy as np

from hgen.compiler.data import DIGIT_LABELS, load_dataset
from hgen.compiler.data.detection import compose, load_detection_dataset
from hgen.compiler.data.synthetic import write_yolo_set
from hgen.compiler.metrics.detection import mean_average_precision
from hgen.compiler.models import build_model
from hgen.compiler.models.two_stage_detector import (TwoStageTrainConfig, calibrate_two_stage, predict_slots,
                                                     train_two_stage)
from hgen.runtime.hdnn import FusionParams, get_kind
from hgen.runtime.hdnn.yolo import Detections


def where_map(found: list[Detections], truth: list[np.ndarray]) -> float:
    """Class-agnostic mAP@0.5: whether the kind's boxes land on the objects, whatever class it names (two epochs on
    240 canvases teach where digits are long before which: the class mAP stays near 0)."""
    boxes = [Detections(d.boxes, np.zeros_like(d.classes), d.scores) for d in found]
    objects = [np.concatenate([t[:, :4], np.zeros((len(t), 1))], axis=1) for t in truth]
    return mean_average_precision(boxes, objects, 1)


def test_trains_on_a_users_yolo_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import keras

    digits = load_dataset("digits", seed=0)
    rng = np.random.default_rng(3)
    splits = {"train": compose(digits.train, 240, rng), "val": compose(digits.val, 60, rng),
              "test": compose(digits.test, 60, rng)}
    root = write_yolo_set(tmp_path / "site", splits, DIGIT_LABELS, size=96)
    data = load_detection_dataset(str(root / "data.yaml"))
    assert data.input_shape[2] == 3 and data.num_classes == 10 and len(data.test) == 60
    keras.utils.set_random_seed(0)  # the initial weights too (training seeds itself): the bound below is for these
    model = build_model("two_stage_detector", data.input_shape, data.num_classes)
    train_two_stage(model, data.train, data.num_classes, TwoStageTrainConfig(epochs=2))
    temperature = calibrate_two_stage(model, data.val, data.num_classes)
    outputs = predict_slots(model, data.test.x)
    kind = get_kind("faster_rcnn")
    assert outputs.shape[1:] == (12, 12, kind.output_channels(10))  # 96 / 8
    params = FusionParams(temperature)
    confidence = kind.confidence(outputs, params)
    assert confidence.shape == (60,) and np.all((confidence >= 0) & (confidence <= 1))
    found = kind.detect(outputs, params, 0.05)
    assert np.isfinite(mean_average_precision(found, data.test.boxes, data.num_classes))
    # measured 0.094 (0.092 and 0.031 from seeds 1 and 2); untrained 0.015 / 0.003 / 0.002, and the same boxes
    # read with x and y swapped (a layout the kind got wrong) at most 0.005
    assert where_map(found, data.test.boxes) > 0.025
