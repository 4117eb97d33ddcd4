"""Pixel boxes of the frame <-> the runtime's normalised corners, for the detection kinds' adapters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hgen.edge_agent.kinds import FrameSize, label_name
from hgen.edge_agent.results import BoxResult
from hgen.protos import hub_pb2


def box_results(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                size: FrameSize) -> tuple[BoxResult, ...]:
    """Normalised corners [k, 4] -> pixel BoxResults of the frame."""
    pixels = np.asarray(boxes, np.float64).reshape(-1, 4) * size.scale
    return tuple(BoxResult(float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(c), label_name(labels, int(c)),
                           float(s)) for b, c, s in zip(pixels, classes, scores))


def proto_boxes(results: Sequence[BoxResult]) -> list[hub_pb2.Box]:
    return [hub_pb2.Box(x_min=b.x_min, y_min=b.y_min, x_max=b.x_max, y_max=b.y_max, class_id=b.class_id,
                        score=b.score) for b in results]


def aggregated_rows(reply: hub_pb2.SampleReply, size: FrameSize) -> np.ndarray | None:
    """The hub's aggregated pixel boxes as normalised [k, 6] (corners, class, support); None without a box label.

    Boxes with no area after clipping to the frame are dropped (the runtime refuses them)."""
    if reply.aggregated.WhichOneof("label") != "boxes":
        return None
    rows = np.array([[b.x_min, b.y_min, b.x_max, b.y_max, b.class_id, b.score] for b in reply.aggregated.boxes.boxes],
                    np.float64).reshape(-1, 6)
    rows[:, :4] = np.clip(rows[:, :4] / size.scale, 0.0, 1.0)
    return rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])]
