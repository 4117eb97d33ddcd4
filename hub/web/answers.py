"""Turn a submitted annotator form into an hgen.v1.Answer (or a skip / can't tell), refusing anything malformed.

The answer's kind comes from the task (its H-DNN kind), never from the form: a form naming another kind is
refused, so nothing that its sample's aggregator cannot aggregate is stored. Box and region coordinates arrive
in the image's own pixels (the browser scales back from the display size). Time to answer is what the page
measured from showing the task to the click, bounded by what the hub saw (assignment to arrival), so a client
cannot claim more time than it had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hgen.hub.aggregators import label_for_kind
from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, Shape, parse_shapes
from hgen.protos import hub_pb2

VIEW_OF_LABEL = {"class_id": "class", "boxes": "boxes", "regions": "regions"}


@dataclass(frozen=True)
class Release:
    """The annotator gave the task back without a label."""

    kind: str
    latency_s: float


def view_of(task: Task) -> str:
    """What the page asks for: class, boxes or regions."""
    return VIEW_OF_LABEL[label_for_kind(task.hdnn_kind)]


def latency(elapsed_ms: str, server_elapsed_s: float) -> float:
    try:
        client = float(elapsed_ms) / 1000.0
    except ValueError:
        client = -1.0
    if not math.isfinite(client):
        client = -1.0
    return client if 0.0 < client <= server_elapsed_s + 1.0 else max(0.0, server_elapsed_s)


def parse(form: AnswerForm, task: Task, annotator: str, num_classes: int,
          server_elapsed_s: float) -> hub_pb2.Answer | Release:
    seconds = latency(form.elapsed_ms, server_elapsed_s)
    if form.release is not None:
        return Release(form.release, seconds)
    view = view_of(task)
    if form.kind is not None and form.kind != view:
        raise InvalidRequestError(f"this task asks for {view}, not {form.kind}; nothing was stored")
    answer = hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, annotator_id=annotator,
                            latency_s=seconds, simulated=False)
    if view == "class":
        if form.class_id is None:
            raise InvalidRequestError("choose a class (or answer skip / can't tell)")
        answer.class_id = check_class(form.class_id, num_classes)
        answer.operations = 1
    elif view == "boxes":
        boxes = [_coords(shape, task, num_classes, with_class=True) for shape in parse_shapes(form.shapes)]
        answer.boxes.boxes.extend(hub_pb2.Box(**b) for b in boxes)
        answer.operations = len(boxes)
    else:
        regions = [_coords(shape, task, num_classes, with_class=False) for shape in parse_shapes(form.shapes)]
        answer.regions.regions.extend(hub_pb2.Region(**r, weight=1.0) for r in regions)
        answer.operations = len(regions)
    return answer


def check_class(class_id: int, num_classes: int) -> int:
    if not 0 <= class_id < num_classes:
        raise InvalidRequestError(f"class must be in 0..{num_classes - 1}, got {class_id}")
    return class_id


def _coords(shape: Shape, task: Task, num_classes: int, with_class: bool) -> dict:
    coords = {"x_min": shape.x_min, "y_min": shape.y_min, "x_max": shape.x_max, "y_max": shape.y_max}
    width, height = task.image.width or 1e9, task.image.height or 1e9
    if not (coords["x_min"] < coords["x_max"] <= width and coords["y_min"] < coords["y_max"] <= height):
        raise InvalidRequestError(f"shape {coords} is empty or outside the {width:g}x{height:g} image")
    if with_class:
        if shape.class_id is None:
            raise InvalidRequestError("each box needs a class_id")
        coords["class_id"] = check_class(shape.class_id, num_classes)
    return coords
