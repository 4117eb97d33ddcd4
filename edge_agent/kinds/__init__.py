"""How each H-DNN kind's output meets the agent: Result fields, the ModelOutput people see, the answers fusion takes.

The numbers (confidence, the model's answer, fusion) come from the runtime kind (`hgen.runtime.hdnn.get_kind`), so
device, compiler and hub agree on them; an adapter only translates between that kind's arrays and the agent's
Result / wire messages. One adapter per kind name, registered in `ADAPTERS`; the agent never branches on kind.

Boxes: the runtime works in normalised corners of the model input; the preprocessing is a plain resize, so a
normalised box times the frame's width and height is the box in pixels of the frame as captured and sent. Results
and the hub (ModelOutput.boxes, AggregatedLabel.boxes, the annotator page) use those pixels.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hgen.edge_agent.results import BoxResult, Result
from hgen.protos import hub_pb2
from hgen.runtime.errors import UnknownChoiceError
from hgen.runtime.labour import MAX_OPERATIONS, MIN_OPERATIONS
from hgen.runtime.registry import Registry

if TYPE_CHECKING:
    from hgen.edge_agent.model import Model

ANSWERED = (hub_pb2.REPLY_STATUS_ANSWERED, hub_pb2.REPLY_STATUS_PARTIAL)


@dataclass(frozen=True)
class FrameSize:
    """Pixels of the frame as sent to people: scales normalised boxes both ways."""

    width: int
    height: int

    @property
    def scale(self) -> np.ndarray:
        return np.array([self.width, self.height, self.width, self.height], np.float64)


class KindAdapter(Protocol):
    """The device-side translation of one H-DNN kind's outputs (one sample: outputs keep a batch axis of 1)."""

    name: str

    def answer_fields(self, model: Model, outputs: np.ndarray, size: FrameSize) -> dict[str, Any]:
        """The model's own answer as Result fields."""

    def difficulty(self, model: Model, outputs: np.ndarray, confidence: float) -> float:
        """Operations a person needs (d in [1, 3], Eq. 3) to answer this sample."""

    def model_output(self, model: Model, outputs: np.ndarray, result: Result) -> hub_pb2.ModelOutput:
        """What people see of the model's answer (`result` holds answer_fields; the agent sets confidence, kind)."""

    def fuse_answers(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize) -> Any | None:
        """The reply as the runtime kind's `fuse` answers for one sample; None when it holds no usable label."""

    def fused_fields(self, fused: Any, answers: Any, labels: Sequence[str], size: FrameSize) -> dict[str, Any]:
        """Result fields after fusion (`fused` is the runtime kind's fuse output for one sample)."""

    def late_fields(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize,
                    labels: Sequence[str]) -> dict[str, Any]:
        """People's answers for a `late` result, which keeps the model's answer."""

    def answer_key(self, model: Model, outputs: np.ndarray) -> list[Hashable]:
        """Per sample, something equal when two models give the same answer (swap agreement check)."""


ADAPTERS: Registry[KindAdapter] = Registry("agent H-DNN kind", UnknownChoiceError)


def adapter_for(kind: str) -> KindAdapter:
    return ADAPTERS.get(kind)


def label_name(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def difficulty_from_confidence(confidence: float) -> float:
    """d = 1 + 2 (1 - c), clipped to [1, 3]: the hub's own estimate, for kinds without class probabilities."""
    d = MIN_OPERATIONS + (MAX_OPERATIONS - MIN_OPERATIONS) * (1.0 - float(confidence))
    return float(min(MAX_OPERATIONS, max(MIN_OPERATIONS, d)))


# --- H-CNN -------------------------------------------------------------------------------------------------


def _class_answers(reply: hub_pb2.SampleReply, classes: int) -> tuple[int, ...]:
    return tuple(int(a.class_id) for a in reply.answers if a.WhichOneof("label") == "class_id" and a.class_id < classes)


class CNNAdapter:
    """Classification: an int label, class probabilities for people, one vote per annotator."""

    name = "cnn"

    def answer_fields(self, model: Model, outputs: np.ndarray, size: FrameSize) -> dict[str, Any]:
        label = int(model.kind.predict(outputs, model.params)[0])
        return {"label": label, "label_name": label_name(model.manifest.labels, label), "model_label": label}

    def difficulty(self, model: Model, outputs: np.ndarray, confidence: float) -> float:
        return float(model.difficulty.difficulty(model.probabilities(outputs))[0])

    def model_output(self, model: Model, outputs: np.ndarray, result: Result) -> hub_pb2.ModelOutput:
        return hub_pb2.ModelOutput(class_probabilities=model.probabilities(outputs)[0].astype(float).tolist())

    def fuse_answers(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize) -> Any | None:
        answers = _class_answers(reply, outputs.shape[-1]) if reply.status in ANSWERED else ()
        return np.asarray([answers]) if answers else None

    def fused_fields(self, fused: Any, answers: Any, labels: Sequence[str], size: FrameSize) -> dict[str, Any]:
        label = int(fused)
        return {"label": label, "label_name": label_name(labels, label),
                "answers": tuple(int(a) for a in answers[0])}

    def late_fields(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize,
                    labels: Sequence[str]) -> dict[str, Any]:
        return {"answers": _class_answers(reply, outputs.shape[-1])}

    def answer_key(self, model: Model, outputs: np.ndarray) -> list[Hashable]:
        return [int(label) for label in model.kind.predict(outputs, model.params)]


# --- H-YOLO ------------------------------------------------------------------------------------------------


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


class YOLOAdapter:
    """Detection: pixel boxes in results and for people; people's aggregated boxes (box_union) are fused."""

    name = "yolo"

    def answer_fields(self, model: Model, outputs: np.ndarray, size: FrameSize) -> dict[str, Any]:
        found = model.kind.predict(outputs, model.params)[0]
        boxes = box_results(found.boxes, found.classes, found.scores, model.manifest.labels, size)
        return {"boxes": boxes, "model_boxes": boxes}

    def difficulty(self, model: Model, outputs: np.ndarray, confidence: float) -> float:
        return difficulty_from_confidence(confidence)

    def model_output(self, model: Model, outputs: np.ndarray, result: Result) -> hub_pb2.ModelOutput:
        return hub_pb2.ModelOutput(boxes=proto_boxes(result.model_boxes))

    def fuse_answers(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize) -> Any | None:
        rows = aggregated_rows(reply, size) if reply.status in ANSWERED else None
        return None if rows is None else [rows]

    def fused_fields(self, fused: Any, answers: Any, labels: Sequence[str], size: FrameSize) -> dict[str, Any]:
        people = answers[0]
        return {"boxes": box_results(fused.boxes, fused.classes, fused.scores, labels, size),
                "human_boxes": box_results(people[:, :4], people[:, 4].astype(np.int64), people[:, 5], labels, size)}

    def late_fields(self, reply: hub_pb2.SampleReply, outputs: np.ndarray, size: FrameSize,
                    labels: Sequence[str]) -> dict[str, Any]:
        rows = aggregated_rows(reply, size)
        if rows is None:
            return {}
        return {"human_boxes": box_results(rows[:, :4], rows[:, 4].astype(np.int64), rows[:, 5], labels, size)}

    def answer_key(self, model: Model, outputs: np.ndarray) -> list[Hashable]:
        return [tuple(sorted(int(c) for c in found.classes)) for found in model.kind.predict(outputs, model.params)]


ADAPTERS.add("cnn", CNNAdapter())
ADAPTERS.add("yolo", YOLOAdapter())

