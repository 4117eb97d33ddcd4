"""Box labels (H-YOLO): the people's aggregated boxes of each detection sample, for the yolo retrain kind.

Which replies count as human labels (classes and boxes) is decided in records.py (`human_label`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.hub.kb.closing import MIN_AGREEMENT
from hgen.hub.kb.models import Reply, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain.records import agreed_drawing, labelled_rows
from hgen.protos import hub_pb2
from hgen.protos.kinds import wire_kinds


@dataclass(frozen=True)
class BoxSample:
    """A box-labelled sample: the stored image and the people's aggregated boxes [k, 6] in pixels
    (x_min, y_min, x_max, y_max, class, support)."""

    sample_id: str
    boxes: np.ndarray
    image_format: int
    height: int
    width: int
    channels: int
    image: bytes


def agreed_boxes(payload: bytes) -> np.ndarray:
    """The boxes most of the people who drew drew: in an agreed drawing (`agreed_drawing`) a box fewer drew was left
    out by a majority of the people asked, and is learned as nothing there."""
    label = hub_pb2.SampleReply.FromString(payload).aggregated
    rows = [(b.x_min, b.y_min, b.x_max, b.y_max, b.class_id, b.score) for b in label.boxes.boxes
            if b.score > MIN_AGREEMENT]
    return np.array(rows, np.float64).reshape(-1, 6)


def box_selection() -> tuple[Any, ...]:
    """SQL: the samples whose people draw boxes, where a majority of the people asked stands behind the drawing
    (`records.agreed_drawing`): what a box label is, to a retrain and to an export."""
    return (Sample.hdnn_kind.in_(wire_kinds(lambda kind: kind.label == "boxes")), agreed_drawing())


def box_samples(kb: KnowledgeBase, name: str, up_to: float, newest: int | None = None) -> list[BoxSample]:
    """Every box-labelled sample of `name` replied up to `up_to` that a majority of the people asked stands behind
    (`records.agreed_drawing`; all knowledge so far, not only new; the `newest` of them when set)."""
    rows = labelled_rows(kb, name, up_to, Reply.payload, *box_selection(), newest=newest)
    return [BoxSample(r[0], agreed_boxes(r[1]), *r[2:]) for r in rows]
