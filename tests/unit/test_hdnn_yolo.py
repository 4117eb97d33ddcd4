"""H-YOLO runtime kind: grid decoding, NMS, the per-image confidence, human box fusion, and mAP@0.5."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.metrics.detection import mean_average_precision
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.hdnn import FusionParams, get_kind, kind_names, needs_human
from hgen.runtime.hdnn.yolo import MAX_DETECTIONS, Detections, box_iou, decode, fuse_image, human_boxes, nms

S, C = 4, 3
SURE = 12.0  # a logit the sigmoid maps to ~1


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def empty_grid(n: int = 1) -> np.ndarray:
    out = np.zeros((n, S, S, 5 + C))
    out[..., 0] = -SURE  # sure there is nothing
    return out


def put(out: np.ndarray, i: int, box: tuple[float, float, float, float], cls: int, obj: float = SURE,
        class_logit: float = SURE) -> None:
    """Write a box (normalised corners) into the cell of its centre, in the model's raw output form."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 * S, (y0 + y1) / 2 * S
    row, col = int(cy), int(cx)
    out[i, row, col, :5] = (obj, logit(cx - col), logit(cy - row), logit(x1 - x0), logit(y1 - y0))
    out[i, row, col, 5:] = 0.0
    out[i, row, col, 5 + cls] = class_logit


def test_yolo_kind_is_registered() -> None:
    assert {"cnn", "yolo"} <= set(kind_names())
    assert get_kind("yolo").name == "yolo"


def test_decode_recovers_boxes_and_classes() -> None:
    out = empty_grid()
    put(out, 0, (0.1, 0.1, 0.3, 0.35), cls=2)
    put(out, 0, (0.6, 0.55, 0.9, 0.95), cls=0)
    (found,) = decode(out)
    assert len(found) == 2
    order = np.argsort(found.classes)
    np.testing.assert_allclose(found.boxes[order], [[0.6, 0.55, 0.9, 0.95], [0.1, 0.1, 0.3, 0.35]], atol=1e-6)
    assert found.scores.min() > 0.99


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    kept = nms(Detections(boxes, np.array([1, 1, 2, 1]), np.array([0.7, 0.9, 0.8, 0.6])))
    assert sorted(kept.scores.tolist()) == [0.6, 0.8, 0.9]  # same place, other class: both stay


def test_confidence_is_the_least_certain_cell() -> None:
    kind, params = get_kind("yolo"), FusionParams()
    sure = empty_grid(3)
    put(sure, 0, (0.1, 0.1, 0.3, 0.3), cls=1)
    put(sure, 1, (0.1, 0.1, 0.3, 0.3), cls=1, obj=logit(0.55))  # coin flip whether there is an object
    put(sure, 2, (0.1, 0.1, 0.3, 0.3), cls=1, class_logit=0.2)  # an object, but which digit?
    c = kind.confidence(sure, params)
    assert c.shape == (3,) and np.all((c >= 0) & (c <= 1))
    assert c[0] > 0.99 and c[1] < 0.15 and c[2] < 0.5
    assert needs_human(c, 0.5).tolist() == [False, True, True]


def test_a_probably_missed_object_lowers_confidence() -> None:
    """A cell just below the score threshold is invisible to 'lowest kept score' but not to this confidence."""
    out = empty_grid()
    put(out, 0, (0.1, 0.1, 0.3, 0.3), cls=1)
    put(out, 0, (0.6, 0.6, 0.9, 0.9), cls=2, obj=logit(0.45))
    kind = get_kind("yolo")
    assert len(kind.predict(out, FusionParams())[0]) == 1
    assert kind.confidence(out, FusionParams())[0] < 0.15


def test_temperature_softens_confidence() -> None:
    out = empty_grid()
    put(out, 0, (0.1, 0.1, 0.3, 0.3), cls=1, obj=3.0, class_logit=3.0)
    kind = get_kind("yolo")
    assert kind.confidence(out, FusionParams(temperature=3.0))[0] < kind.confidence(out, FusionParams())[0]


def test_bad_outputs_and_answers_are_refused() -> None:
    kind = get_kind("yolo")
    with pytest.raises(InvalidInputError, match="grid"):
        kind.confidence(np.zeros((2, 10)), FusionParams())
    with pytest.raises(InvalidInputError, match="answers"):
        kind.fuse(empty_grid(2), [None], FusionParams())
    with pytest.raises(InvalidInputError, match="x_max"):
        human_boxes([[0.5, 0.1, 0.4, 0.3, 1, 1.0]])


def test_fusion_people_replace_the_models_boxes() -> None:
    out = empty_grid(4)
    for i in range(4):
        put(out, i, (0.1, 0.1, 0.3, 0.3), cls=1)  # the model's own box
    answers = [
        None,  # nobody answered: the model's boxes stand
        np.zeros((0, 6)),  # people saw nothing: no boxes
        np.array([[0.12, 0.1, 0.31, 0.3, 1, 1.0], [0.6, 0.6, 0.8, 0.9, 2, 2 / 3]]),  # majority boxes, people's coords
        # minority boxes: kept only where the model agrees
        np.array([[0.11, 0.1, 0.3, 0.3, 1, 1 / 3], [0.6, 0.6, 0.8, 0.9, 2, 1 / 3]]),
    ]
    fused = get_kind("yolo").fuse(out, answers, FusionParams())
    assert len(fused[0]) == 1 and fused[0].scores[0] > 0.99
    assert len(fused[1]) == 0
    assert fused[2].classes.tolist() == [1, 2]
    np.testing.assert_allclose(fused[2].boxes[0], [0.12, 0.1, 0.31, 0.3])
    assert fused[3].classes.tolist() == [1]


def test_fuse_image_drops_model_boxes_people_did_not_draw() -> None:
    model = Detections(np.array([[0.1, 0.1, 0.3, 0.3]]), np.array([4]), np.array([0.95]))
    people = human_boxes(np.array([[0.5, 0.5, 0.7, 0.7, 3, 1.0]]))
    fused = fuse_image(model, people)
    assert fused.classes.tolist() == [3]


def test_map_at_half_iou() -> None:
    truth = [np.array([[0.1, 0.1, 0.3, 0.3, 1], [0.6, 0.6, 0.9, 0.9, 2]]), np.array([[0.2, 0.2, 0.4, 0.4, 1]])]
    perfect = [Detections(t[:, :4], t[:, 4].astype(int), np.ones(len(t))) for t in truth]
    assert mean_average_precision(perfect, truth, C) == pytest.approx(1.0)
    shifted = [Detections(t[:, :4] + 0.15, t[:, 4].astype(int), np.ones(len(t))) for t in truth]  # IoU < 0.5
    assert mean_average_precision(shifted, truth, C) == pytest.approx(0.0)
    wrong_class = [perfect[0], Detections(truth[1][:, :4], np.array([0]), np.ones(1))]
    assert mean_average_precision(wrong_class, truth, C) == pytest.approx(0.75)  # class 1: AP 0.5, class 2: AP 1


def _greedy_reference(found: Detections, iou_threshold: float = 0.5) -> list[int]:
    """The textbook rule, slowly: a box is kept unless it overlaps a kept box of its class."""
    keep: list[int] = []
    for index in np.argsort(-found.scores, kind="stable"):
        same = [k for k in keep if found.classes[k] == found.classes[index]]
        if not same or box_iou(found.boxes[index], found.boxes[same]).max() < iou_threshold:
            keep.append(int(index))
    return keep


def test_nms_keeps_what_the_greedy_rule_keeps_and_caps_a_flood_of_boxes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        k = int(rng.integers(0, 80))
        corner = rng.uniform(0, 0.8, (k, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(0.02, 0.3, (k, 2))], axis=1)
        scores = rng.uniform(0.5, 1.0, k)
        scores[: k // 4] = 0.75  # ties keep their order
        found = Detections(boxes, rng.integers(0, 3, k), scores)
        kept = nms(found)
        np.testing.assert_array_equal(kept.boxes, found.boxes[_greedy_reference(found)])
    flood = np.zeros((1, 40, 40, 15), np.float32)  # every one of 1,600 cells fires, small disjoint boxes
    flood[..., 0], flood[..., 5], flood[..., 3:5] = 9.0, 9.0, -3.0
    assert len(decode(flood)[0]) == MAX_DETECTIONS
