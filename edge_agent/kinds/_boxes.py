"""Pixel boxes of the frame <-> the runtime's normalised corners, for the detection kinds' adapters."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from hgen.edge_agent.kinds import FrameSize, label_name
from hgen.edge_agent.results import BoxResult
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)


def box_results(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, labels: Sequence[str],
                size: FrameSize) -> tuple[BoxResult, ...]:
    """Normalised input corners [k, 4] -> pixel BoxResults of the frame: a letterboxed model's box reaching into
    the padding is clipped to the frame, and one wholly inside the padding (no area left) is no box of the frame."""
    pixels = np.clip(size.to_pixels(boxes), 0.0, [size.width, size.height] * 2)
    return tuple(BoxResult(float(b[0]), float(b[1]), float(b[2]), float(b[3]), int(c), label_name(labels, int(c)),
                           float(s)) for b, c, s in zip(pixels, classes, scores) if b[2] > b[0] and b[3] > b[1])


def proto_boxes(results: Sequence[BoxResult]) -> list[hub_pb2.Box]:
    return [hub_pb2.Box(x_min=b.x_min, y_min=b.y_min, x_max=b.x_max, y_max=b.y_max, class_id=b.class_id,
                        score=b.score) for b in results]


def aggregated_rows(reply: hub_pb2.SampleReply, size: FrameSize, classes: int) -> np.ndarray | None:
    """The hub's aggregated pixel boxes as normalised [k, 6] (corners, class, support); None without a box label.

    Boxes the model cannot hold are dropped and logged (a class id outside 0..classes-1, a coordinate or score that
    is not finite: fused in, they would reach the results as classes or boxes the model does not have), as are
    boxes with no area after clipping to the frame (the runtime refuses them)."""
    if reply.aggregated.WhichOneof("label") != "boxes":
        return None
    rows = np.array([[b.x_min, b.y_min, b.x_max, b.y_max, b.class_id, b.score] for b in reply.aggregated.boxes.boxes],
                    np.float64).reshape(-1, 6)
    rows = finite_rows(rows, reply.sample_id)
    known = (rows[:, 4] >= 0) & (rows[:, 4] < classes)
    _log_invalid(reply.sample_id, int((~known).sum()), f"a class id outside 0..{classes - 1}")
    return clipped(rows[known], size)


def finite_rows(rows: np.ndarray, sample_id: str) -> np.ndarray:
    """Rows whose every value is finite (the others are logged and dropped)."""
    valid = np.isfinite(rows).all(axis=1)
    _log_invalid(sample_id, int((~valid).sum()), "a value not finite")
    return rows[valid]


def clipped(rows: np.ndarray, size: FrameSize) -> np.ndarray:
    """Pixel corners (the first 4 columns) clipped to the frame and mapped to normalised input corners; rows with no
    area left dropped."""
    rows = rows.copy()
    rows[:, :4] = size.to_input(np.clip(rows[:, :4], 0.0, [size.width, size.height] * 2))
    return rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])]


def _log_invalid(sample_id: str, dropped: int, why: str) -> None:
    if dropped:
        log.warning("reply for sample %s: %d aggregated box(es) dropped, with %s", sample_id, dropped, why)
