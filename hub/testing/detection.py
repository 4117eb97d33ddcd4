"""H-YOLO test helpers: detection samples as a device sends them, and a SIMULATED crowd that draws boxes.

The simulated annotators do not look at images: they know the true boxes (an oracle) and answer with noisy
copies, seeded: each corner moves by Gaussian pixel noise, a box is missed or given a wrong class with small
probabilities. Every answer is marked `simulated`. They answer through the annotator API (next_task /
submit_answer), as the web UI does, so aggregation (`box_union`), replies and the retrain trigger are the hub's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from hgen.hub.annotators import AnnotatorAPI
from hgen.protos import hub_pb2
from hgen.runtime.hdnn.yolo import Detections


@dataclass(frozen=True)
class BoxAnnotator:
    """One simulated person: corner noise (pixels), miss and wrong-class probabilities."""

    name: str
    corner_noise_px: float = 1.0
    miss: float = 0.05
    wrong_class: float = 0.05


def pixel_boxes(rows: np.ndarray, size: int) -> np.ndarray:
    """Normalised [k, 5+] boxes -> pixel corners of a `size` x `size` image (class and the rest unchanged)."""
    out = np.array(rows, np.float64, copy=True)
    out[:, :4] *= size
    return out


def detection_sample(device_id: str, bundle_name: str, image: np.ndarray, found: Detections,
                     confidence: float) -> hub_pb2.Sample:
    """A grey canvas in [0, 1] as PNG with the model's boxes (pixels) and confidence, kind H-YOLO."""
    pixels = np.clip(image[:, :, 0] * 255.0, 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    size = pixels.shape[0]
    boxes = [hub_pb2.Box(x_min=b[0] * size, y_min=b[1] * size, x_max=b[2] * size, y_max=b[3] * size,
                         class_id=int(c), score=float(s)) for b, c, s in zip(found.boxes, found.classes, found.scores)]
    return hub_pb2.Sample(sample_id=str(uuid.uuid4()), device_id=device_id, bundle_name=bundle_name,
                          bundle_version="1.0.0",
                          image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=size,
                                              width=pixels.shape[1], channels=1),
                          output=hub_pb2.ModelOutput(boxes=boxes, confidence=float(confidence),
                                                     kind=hub_pb2.HDNN_KIND_YOLO))


class DrawingCrowd:
    """Simulated people answering drawing tasks (boxes, regions) from an oracle (sample id -> true pixel boxes
    [k, 5+]) through the annotator API; a subclass says what one person draws (`answer_fields`)."""

    latency_s = 6.0  # median seconds a simulated person takes (log-normal around it)

    def __init__(self, api: AnnotatorAPI, annotators: Sequence[Any], oracle: Mapping[str, np.ndarray],
                 seed: int = 0) -> None:
        self.api = api
        self.annotators = tuple(annotators)
        self.oracle = oracle
        self.rng = np.random.default_rng(seed)
        self.answered = 0
        for person in self.annotators:
            api.register(person.name, simulated=True)

    def answer_fields(self, person: Any, truth: np.ndarray) -> dict[str, Any]:
        """The Answer's label field and its operation count for one person's drawing."""
        raise NotImplementedError

    def run_until_idle(self) -> int:
        """Rounds of one task per annotator until nobody gets a task; returns the answers given (no sleeps)."""
        given = -1
        while given:
            given = 0
            for person in self.annotators:
                task = self.api.next_task(person.name)
                if task is None:
                    continue
                fields = self.answer_fields(person, self.oracle[task.sample_id])
                self.api.submit_answer(hub_pb2.Answer(
                    task_id=task.task_id, sample_id=task.sample_id, annotator_id=person.name,
                    latency_s=float(self.rng.lognormal(np.log(self.latency_s), 0.4)), simulated=True, **fields))
                given += 1
            self.answered += given
        return self.answered


class BoxCrowd(DrawingCrowd):
    """Simulated annotators answering box tasks from an oracle (sample id -> true pixel boxes [k, 5])."""

    def __init__(self, api: AnnotatorAPI, annotators: tuple[BoxAnnotator, ...], oracle: Mapping[str, np.ndarray],
                 num_classes: int, seed: int = 0) -> None:
        super().__init__(api, annotators, oracle, seed)
        self.num_classes = num_classes

    def answer_fields(self, person: BoxAnnotator, truth: np.ndarray) -> dict[str, Any]:
        boxes = self.answer(person, truth)
        return {"boxes": boxes, "operations": 1 + 2 * len(boxes.boxes)}

    def answer(self, person: BoxAnnotator, truth: np.ndarray) -> hub_pb2.BoxList:
        boxes = []
        for x0, y0, x1, y1, cls in truth:
            if self.rng.random() < person.miss:
                continue
            jitter = self.rng.normal(0.0, person.corner_noise_px, 4)
            a, b, c, d = x0 + jitter[0], y0 + jitter[1], max(x1 + jitter[2], x0 + jitter[0] + 1), \
                max(y1 + jitter[3], y0 + jitter[1] + 1)
            label = int(cls)
            if self.rng.random() < person.wrong_class:
                label = int((label + self.rng.integers(1, self.num_classes)) % self.num_classes)
            boxes.append(hub_pb2.Box(x_min=a, y_min=b, x_max=c, y_max=d, class_id=label))
        return hub_pb2.BoxList(boxes=boxes)
