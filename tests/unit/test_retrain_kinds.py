"""Retraining per H-DNN kind: the registry, per-kind thresholds, detection labels as grid targets, acceptance by
the kind's metric, and box replies counted as human labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hgen.hub.config import ModelConfig, parse_hub_config
from hgen.hub.errors import HubConfigError
from hgen.hub.retrain.accept import check
from hgen.hub.retrain.kinds import get_retrain_kind, retrain_kind_names
from hgen.hub.retrain.kinds.yolo import HumanBoxes, human_targets, normalised, original_targets
from hgen.hub.retrain.labels import BoxSample
from hgen.runtime.errors import UnknownChoiceError

GRID, C = 4, 3


def test_every_runtime_kind_with_a_loop_is_registered() -> None:
    assert retrain_kind_names() == ["cnn", "faster_rcnn", "yolo"]
    assert get_retrain_kind("yolo").metric == "mAP@0.5" and get_retrain_kind("cnn").metric == "accuracy"
    assert get_retrain_kind("faster_rcnn").metric == "mAP@0.5"
    with pytest.raises(UnknownChoiceError, match="cnn, faster_rcnn, yolo"):
        get_retrain_kind("frcnn")


def test_threshold_defaults_per_kind_and_kind_is_checked() -> None:
    base = {"name": "m", "keras_model": "m.keras", "bundle": "b"}
    assert ModelConfig(**base).threshold == 200
    assert ModelConfig(**base, kind="yolo").threshold == 1000
    assert ModelConfig(**base, kind="yolo", threshold=50).threshold == 50
    with pytest.raises(HubConfigError, match="kind"):
        parse_hub_config({"retrain": {"models": [{**base, "kind": "frcnn"}]}})


def test_pixel_boxes_are_normalised_by_the_stored_image_size() -> None:
    sample = BoxSample("s", np.array([[8.0, 16.0, 24.0, 48.0, 3, 1.0]]), 1, 64, 32, 1, b"")
    np.testing.assert_allclose(normalised(sample), [[0.25, 0.25, 0.75, 0.75, 3, 1.0]])


def sure_grid(n: int) -> np.ndarray:
    out = np.zeros((n, GRID, GRID, 5 + C))
    out[..., 0] = -12.0
    return out


def test_human_boxes_become_grid_targets_by_the_fusion_rule() -> None:
    teacher = sure_grid(1)  # the model saw nothing
    answers = (np.array([[0.05, 0.05, 0.2, 0.2, 2, 1.0],  # majority: a target
                         [0.55, 0.55, 0.7, 0.7, 1, 1 / 3]]),)  # one of three, model did not see it: not a target
    human = HumanBoxes(np.zeros((1, 8, 8, 1), np.float32), answers, ("a",))
    targets = human_targets(teacher, human, GRID, C)
    assert targets[..., 0].sum() == 1.0 and targets[0, 0, 0, 0] == 1.0
    assert targets[0, 0, 0, 5:].tolist() == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(targets[0, 0, 0, 3:5], [0.15, 0.15])
    assert len(human.boxes[0]) == 1  # the held-out truth is what the majority drew


def test_original_targets_mix_teacher_and_truth() -> None:
    teacher = sure_grid(1)
    teacher[0, 2, 2, 0] = 12.0  # the teacher believes in an object the truth does not have
    truth = (np.array([[0.05, 0.05, 0.2, 0.2, 1]]),)
    mixed = original_targets(teacher, truth, C, alpha=0.7)
    assert mixed[0, 0, 0, 0] == pytest.approx(0.3, abs=1e-3)  # true object, teacher unsure: 0.7 * 0 + 0.3 * 1
    assert mixed[0, 2, 2, 0] == pytest.approx(0.7, abs=1e-3)
    np.testing.assert_allclose(mixed[0, 0, 0, 3:5], [0.15, 0.15], atol=1e-6)  # truth's box in true object cells


def test_acceptance_names_the_kinds_metric() -> None:
    scores = {("cur", "h"): 0.6, ("new", "h"): 0.5, ("cur", "t"): 0.7, ("new", "t"): 0.72}

    class Set(list):
        def __init__(self, tag: str, n: int) -> None:
            super().__init__(range(n))
            self.tag = tag

    verdict = check("cur", "new", Set("h", 40), Set("t", 100), tolerance=0.05, min_holdout=10,
                    score=lambda model, s: scores[(model, s.tag)], metric="mAP@0.5")
    assert not verdict.accepted and verdict.metric == "mAP@0.5"
    assert verdict.reason == "held-out human mAP@0.5 fell from 0.6000 to 0.5000"


def test_box_replies_count_as_human_labels(tmp_path: Path) -> None:
    """A detection reply has boxes, no class: RetrainStore counts it, and a run's cutoff covers it."""
    from hgen.hub.service import HubService
    from hgen.hub.retrain.labels import box_samples
    from hgen.hub.retrain.records import RetrainStore
    from hgen.hub.testing.detection import BoxAnnotator, BoxCrowd, detection_sample
    from hgen.hub.testing.samples import make_request
    from hgen.runtime.hdnn.yolo import Detections

    config = parse_hub_config({"devices": ["cam"], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}})
    service = HubService.from_config(config)
    try:
        image = np.full((16, 16, 1), 0.25, np.float32)
        samples = [detection_sample("cam", "det", image, Detections.empty(), 0.2) for _ in range(4)]
        truth = {s.sample_id: np.array([[2.0, 2.0, 9.0, 12.0, 4]]) for s in samples}
        truth[samples[0].sample_id] = np.zeros((0, 5))  # nothing there: still a label
        service.submit(make_request("cam", samples, m=2), "grpc")
        people = (BoxAnnotator("p1", miss=0.0, wrong_class=0.0), BoxAnnotator("p2", miss=0.0, wrong_class=0.0))
        BoxCrowd(service.annotators, people, truth, 10).run_until_idle()  # both agree: every reply is a label
        store = RetrainStore(service.kb)
        assert store.new_label_count("det") == 4
        found = {s.sample_id: s for s in box_samples(service.kb, "det", up_to=float("inf"))}
        assert len(found) == 4 and len(found[samples[0].sample_id].boxes) == 0
        assert found[samples[1].sample_id].boxes[0, 4] == 4
        run = store.create_run("det", "api", "1.0.0")
        assert run.cutoff > 0 and store.new_label_count("det") == 0
    finally:
        service.close()
