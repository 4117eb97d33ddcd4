"""How each H-DNN kind's output meets the agent: Result fields, the ModelOutput people see, the answers fusion takes.

The numbers (confidence, the model's answer, fusion, the labour difficulty) come from the runtime kind
(`hgen.runtime.hdnn.get_kind`), so device, compiler and hub agree on them; an adapter only translates between that
kind's arrays and the agent's Result / wire messages. One file per kind in this package (`cnn.py`, `yolo.py`),
registered in `ADAPTERS` under the runtime kind's name and discovered on first use; the agent never branches on
kind. Shared helpers live in underscore modules, which discovery skips.

Boxes: the runtime works in normalised corners of the model input; `FrameSize` maps them to pixels of the frame as
captured and sent, and back, through where the frame lies in the input: all of it for a stretch, the fitted image
inside the padding for a letterbox (`hgen.runtime.preprocess.placement`, what the device's preprocessing did).
Results and the hub (ModelOutput.boxes, AggregatedLabel.boxes, the annotator page) use those pixels.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hgen.edge_agent.results import Result
from hgen.protos import hub_pb2
from hgen.runtime.errors import UnknownChoiceError
from hgen.runtime.registry import Registry

from hgen.runtime.preprocess import placement

if TYPE_CHECKING:
    from hgen.edge_agent.model import Model
    from hgen.runtime.bundle.manifest import InputSpec

ANSWERED = (hub_pb2.REPLY_STATUS_ANSWERED, hub_pb2.REPLY_STATUS_PARTIAL)


WHOLE_INPUT = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class FrameSize:
    """Pixels of the frame as sent to people, and `placed`, the frame's (left, top, right, bottom) in normalised
    input corners: maps the model's boxes to the frame's pixels and people's pixel boxes to the model's corners."""

    width: int
    height: int
    placed: tuple[float, float, float, float] = WHOLE_INPUT

    @classmethod
    def of(cls, width: int, height: int, spec: InputSpec) -> FrameSize:
        """The frame of (width, height) as the device fitted it into the model input `spec` (NHWC)."""
        if spec.resize == "stretch" or len(spec.shape) != 4:
            return cls(width, height)
        _, in_height, in_width, _ = spec.shape
        if (width, height) == (in_width, in_height):
            return cls(width, height)
        box = placement(width, height, in_width, in_height, spec.resize)
        return cls(width, height, (box.left / in_width, box.top / in_height, (box.left + box.width) / in_width,
                                   (box.top + box.height) / in_height))

    def to_pixels(self, corners: np.ndarray) -> np.ndarray:
        """Normalised input corners [k, 4] -> pixel corners of the frame."""
        origin, pixels_per_unit = self._mapping()
        return (np.asarray(corners, np.float64).reshape(-1, 4) - origin) * pixels_per_unit

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel corners of the frame [k, 4] -> normalised input corners (`to_pixels` inverted)."""
        origin, pixels_per_unit = self._mapping()
        return np.asarray(pixels, np.float64).reshape(-1, 4) / pixels_per_unit + origin

    def _mapping(self) -> tuple[np.ndarray, np.ndarray]:
        """(the frame's top-left in input corners, frame pixels per input unit), per corner column."""
        left, top, right, bottom = self.placed
        return (np.array([left, top] * 2),
                np.array([self.width / (right - left), self.height / (bottom - top)] * 2, np.float64))


class KindAdapter(Protocol):
    """The device-side translation of one H-DNN kind's outputs (one sample: outputs keep a batch axis of 1)."""

    name: str

    def answer_fields(self, model: Model, outputs: np.ndarray, size: FrameSize) -> dict[str, Any]:
        """The model's own answer as Result fields."""

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


ADAPTERS: Registry[KindAdapter] = Registry("agent H-DNN kind", UnknownChoiceError, package=__name__)


def adapter_for(kind: str) -> KindAdapter:
    return ADAPTERS.get(kind)


def adapter_names() -> list[str]:
    return ADAPTERS.names()


def label_name(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
