"""H-CNN on the device: an int label, class probabilities for people, one vote per annotator."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.edge_agent.kinds import ADAPTERS, ANSWERED, FrameSize, label_name
from hgen.edge_agent.results import Result
from hgen.protos import hub_pb2

if TYPE_CHECKING:
    from hgen.edge_agent.model import Model


def _class_answers(reply: hub_pb2.SampleReply, classes: int) -> tuple[int, ...]:
    return tuple(int(a.class_id) for a in reply.answers if a.WhichOneof("label") == "class_id" and a.class_id < classes)


class CNNAdapter:
    """Classification: an int label, class probabilities for people, one vote per annotator."""

    name = "cnn"

    def answer_fields(self, model: Model, outputs: np.ndarray, size: FrameSize) -> dict[str, Any]:
        label = int(model.kind.predict(outputs, model.params)[0])
        return {"label": label, "label_name": label_name(model.manifest.labels, label), "model_label": label}

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


ADAPTERS.add("cnn", CNNAdapter())
