"""Human labels of every H-DNN kind: classes (H-CNN) and aggregated boxes (H-YOLO) count towards the trigger.

`RetrainStore` counts a reply as a human label when it carries a class; a detection reply carries boxes (the
`box_union` aggregate, possibly empty = "nothing there") and no class, so it would never count, and its run's cutoff
would stay 0. `LabelStore` widens that one predicate to replies of detection samples. It overrides only the two
predicate queries of RetrainStore; the predicate belongs in records.py (`human_label()` below), after which this
subclass can go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, or_, select

from hgen.hub.kb.models import Reply, Sample
from hgen.hub.kb.store import GOLD_TRANSPORT, KnowledgeBase
from hgen.hub.retrain.records import HUMAN_STATES, RetrainStore
from hgen.protos import hub_pb2

BOX_KINDS = (hub_pb2.HDNN_KIND_YOLO,)


def human_label() -> ColumnElement[bool]:
    """A reply that is a human label: a class, or any answered/partial reply of a box-labelled sample."""
    return or_(Reply.class_id.is_not(None), Sample.hdnn_kind.in_(BOX_KINDS))


def _of_model(name: str) -> tuple[ColumnElement[bool], ...]:
    return (Sample.bundle_name == name, Sample.transport != GOLD_TRANSPORT, Reply.status.in_(HUMAN_STATES))


class LabelStore(RetrainStore):
    """RetrainStore whose label count and run cutoff also see detection labels."""

    def _labels_query(self, name: str):  # type: ignore[no-untyped-def]
        return (select(Reply.sample_id).join(Sample, Sample.id == Reply.sample_id)
                .where(*_of_model(name), human_label()))

    def _latest_label_time(self, s: Any, name: str) -> float:
        query = (select(func.max(Reply.created_at)).join(Sample, Sample.id == Reply.sample_id)
                 .where(*_of_model(name), human_label()))
        return float(s.scalar(query) or 0.0)


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


def _boxes(payload: bytes) -> np.ndarray:
    label = hub_pb2.SampleReply.FromString(payload).aggregated
    rows = [(b.x_min, b.y_min, b.x_max, b.y_max, b.class_id, b.score) for b in label.boxes.boxes]
    return np.array(rows, np.float64).reshape(-1, 6)


def box_samples(kb: KnowledgeBase, name: str, up_to: float) -> list[BoxSample]:
    """Every box-labelled sample of `name` replied up to `up_to` (all knowledge so far, not only new)."""
    with kb.session() as s:
        rows = s.execute(
            select(Sample.id, Reply.payload, Sample.image_format, Sample.height, Sample.width, Sample.channels,
                   Sample.image_bytes, Sample.image_path)
            .join(Reply, Reply.sample_id == Sample.id)
            .where(*_of_model(name), Sample.hdnn_kind.in_(BOX_KINDS), Reply.created_at <= up_to)
            .order_by(Sample.id)).all()
    return [BoxSample(r[0], _boxes(r[1]), r[2], r[3], r[4], r[5], kb.images.get(r[6], r[7])) for r in rows]
