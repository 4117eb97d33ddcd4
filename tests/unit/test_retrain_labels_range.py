"""Human labels outside the model's classes (stored while a hub ran with the wrong `num_classes`) are left out of a
retrain, said in the log, instead of failing every retrain from then on; all of them outside is still an error."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hgen.hub.errors import RetrainError
from hgen.hub.retrain.data import human_set, labels_in_range
from hgen.hub.retrain.records import LabelledSample
from hgen.protos import hub_pb2


def sample(sample_id: str, class_id: int) -> LabelledSample:
    pixels = np.full((4, 4, 1), 100, np.uint8).tobytes()
    return LabelledSample(sample_id, class_id, hub_pb2.IMAGE_FORMAT_RAW_U8, 4, 4, 1, pixels)


def test_out_of_range_labels_are_left_out_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        kept = human_set([sample("a", 0), sample("b", 7), sample("c", 2)], (4, 4, 1), 3)
    assert kept.sample_ids == ("a", "c") and list(kept.y) == [0, 2] and kept.x.shape == (2, 4, 4, 1)
    assert "1 human labels are outside 0..2 and are left out of the retrain (first: b)" in caplog.text


def test_every_label_out_of_range_is_the_wrong_model() -> None:
    with pytest.raises(RetrainError, match="all 2 human labels are outside 0..2"):
        human_set([sample("a", 3), sample("b", 9)], (4, 4, 1), 3)


def test_boxes_count_as_out_of_range_if_any_box_is() -> None:
    boxes = [np.array([0, 1]), np.array([1, 5]), np.array([], np.int64)]
    assert list(labels_in_range(["x", "y", "z"], boxes, 3)) == [True, False, True]
