"""H-YOLO on the device: pixel boxes in results and for people; people's aggregated boxes (box_union) are fused."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.edge_agent.kinds import ADAPTERS, ANSWERED, FrameSize
from hgen.edge_agent.kinds._boxes import aggregated_rows, box_results, proto_boxes
from hgen.edge_agent.results import Result
from hgen.protos import hub_pb2
from hgen.runtime.hdnn.yolo import BOX_FIELDS

if TYPE_CHECKING:
    from hgen.edge_agent.model import Model


def class_count(outputs: np.ndarray) -> int:
    """The model's classes: the grid's channels after objectness and the box."""
    return int(outputs.shape[-1]) - BOX_FIELDS


class YOLOAdapter:
    """Detection: pixel boxes in results and for people; people's aggregated boxes (box_union) are fused."""

    name = "yolo"

    def answer_fields(self, model: Model, outputs: np.ndarray, size: FrameSize) -> dict[str, Any]:
        found = model.kind.predict(outputs, model.params)[0]
        boxes = box_results(found.boxes, found.classes, found.scores, model.manifest.labels, size)
        return {"boxes": boxes, "model_boxes": boxes}

    def model_output(self, model: Model, outputs: np.ndarray, result: Result) -> hub_pb2.ModelOutput:
        return hub_pb2.ModelOutput(boxes=proto_boxes(result.model_boxes))

    def fuse_answers(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize) -> Any | None:
        rows = aggregated_rows(reply, size, class_count(outputs)) if reply.status in ANSWERED else None
        return None if rows is None else [rows]

    def fused_fields(self, fused: Any, answers: Any, labels: Sequence[str], size: FrameSize) -> dict[str, Any]:
        people = answers[0]
        return {"boxes": box_results(fused.boxes, fused.classes, fused.scores, labels, size),
                "human_boxes": box_results(people[:, :4], people[:, 4].astype(np.int64), people[:, 5], labels, size)}

    def late_fields(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize,
                    labels: Sequence[str]) -> dict[str, Any]:
        rows = aggregated_rows(reply, size, class_count(outputs))
        if rows is None:
            return {}
        return {"human_boxes": box_results(rows[:, :4], rows[:, 4].astype(np.int64), rows[:, 5], labels, size)}

    def answer_key(self, model: Model, outputs: np.ndarray) -> list[Hashable]:
        return [tuple(sorted(int(c) for c in found.classes)) for found in model.kind.predict(outputs, model.params)]


ADAPTERS.add("yolo", YOLOAdapter())
