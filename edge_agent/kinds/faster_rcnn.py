"""H-Faster-RCNN on the device: pixel boxes in results and for people; people's attention regions (region_gmm's
Gaussian mixture components) become prior anchors the runtime's second stage scores (`hgen.runtime.hdnn.faster_rcnn`).

Regions carry no class: in results they are `human_boxes` with class -1 (label "region") and the component's
mixture weight as score, so a result still says where people pointed beside the boxes the fusion made of it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.edge_agent.kinds import ADAPTERS, ANSWERED, FrameSize
from hgen.edge_agent.kinds._boxes import box_results, clipped, finite_rows
from hgen.edge_agent.kinds.yolo import YOLOAdapter
from hgen.edge_agent.results import BoxResult
from hgen.protos import hub_pb2

if TYPE_CHECKING:
    from hgen.edge_agent.model import Model

REGION_CLASS = -1
REGION_LABEL = "region"


def aggregated_regions(reply: hub_pb2.SampleReply, size: FrameSize) -> np.ndarray | None:
    """The hub's aggregated pixel regions as normalised [k, 5] (corners, weight); None without a region label.

    Regions with a value that is not finite are dropped and logged, and those with no area after clipping to the
    frame are dropped (the runtime refuses them)."""
    if reply.aggregated.WhichOneof("label") != "regions":
        return None
    rows = np.array([[r.x_min, r.y_min, r.x_max, r.y_max, r.weight] for r in reply.aggregated.regions.regions],
                    np.float64).reshape(-1, 5)
    return clipped(finite_rows(rows, reply.sample_id), size)


def region_results(rows: np.ndarray, size: FrameSize) -> tuple[BoxResult, ...]:
    pixels = size.to_pixels(rows[:, :4])
    return tuple(BoxResult(float(b[0]), float(b[1]), float(b[2]), float(b[3]), REGION_CLASS, REGION_LABEL, float(w))
                 for b, w in zip(pixels, rows[:, 4]))


class FasterRCNNAdapter(YOLOAdapter):
    """Two-stage detection: the model's boxes as H-YOLO's; people's regions are fused by the runtime's second stage
    on the device."""

    name = "faster_rcnn"

    def fuse_answers(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize) -> Any | None:
        rows = aggregated_regions(reply, size) if reply.status in ANSWERED else None
        return None if rows is None else [rows]

    def fused_fields(self, fused: Any, answers: Any, labels: Sequence[str], size: FrameSize) -> dict[str, Any]:
        return {"boxes": box_results(fused.boxes, fused.classes, fused.scores, labels, size),
                "human_boxes": region_results(answers[0], size)}

    def late_fields(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize,
                    labels: Sequence[str]) -> dict[str, Any]:
        rows = aggregated_regions(reply, size)
        return {} if rows is None else {"human_boxes": region_results(rows, size)}

    def answer_key(self, model: Model, outputs: np.ndarray) -> list[Hashable]:
        return [tuple(sorted(int(c) for c in found.classes)) for found in model.kind.predict(outputs, model.params)]


ADAPTERS.add("faster_rcnn", FasterRCNNAdapter())
