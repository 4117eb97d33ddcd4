"""Turn a submitted annotator form into an hgen.v1.Answer (or a skip / can't tell), refusing anything malformed.

Box and region coordinates arrive in the image's own pixels (the browser scales back from the display size).
Time to answer is what the page measured from showing the task to the click, bounded by what the hub saw
(assignment to arrival), so a client cannot claim more time than it had.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.store import Task
from hgen.protos import hub_pb2

MAX_SHAPES = 100
RELEASES = ("skip", "cant_tell")


@dataclass(frozen=True)
class Release:
    """The annotator gave the task back without a label."""

    kind: str
    latency_s: float


def latency(form: Mapping[str, str], server_elapsed_s: float) -> float:
    try:
        client = float(form.get("elapsed_ms", "")) / 1000.0
    except ValueError:
        client = -1.0
    return client if 0.0 < client <= server_elapsed_s + 1.0 else max(0.0, server_elapsed_s)


def parse(form: Mapping[str, str], task: Task, annotator: str, num_classes: int,
          server_elapsed_s: float) -> hub_pb2.Answer | Release:
    kind = form.get("release") or form.get("kind", "")
    seconds = latency(form, server_elapsed_s)
    if kind in RELEASES:
        return Release(kind, seconds)
    answer = hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, annotator_id=annotator,
                            latency_s=seconds, simulated=False)
    if kind == "class":
        answer.class_id = _class(form.get("class_id", ""), num_classes)
        answer.operations = 1
    elif kind == "boxes":
        boxes = [_shape(item, task, num_classes, with_class=True) for item in _shapes(form)]
        answer.boxes.boxes.extend(hub_pb2.Box(**b) for b in boxes)
        answer.operations = len(boxes)
    elif kind == "regions":
        regions = [_shape(item, task, num_classes, with_class=False) for item in _shapes(form)]
        answer.regions.regions.extend(hub_pb2.Region(**r, weight=1.0) for r in regions)
        answer.operations = len(regions)
    else:
        raise InvalidRequestError(f"unknown answer kind {kind!r}; expected class, boxes, regions, skip or cant_tell")
    return answer


def _class(value: str, num_classes: int) -> int:
    try:
        class_id = int(value)
    except ValueError:
        raise InvalidRequestError(f"class must be a number, got {value[:20]!r}") from None
    if not 0 <= class_id < num_classes:
        raise InvalidRequestError(f"class must be in 0..{num_classes - 1}, got {class_id}")
    return class_id


def _shapes(form: Mapping[str, str]) -> list[dict]:
    try:
        items = json.loads(form.get("shapes", "[]"))
    except json.JSONDecodeError:
        raise InvalidRequestError("shapes must be a JSON list") from None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_SHAPES:
        raise InvalidRequestError(f"draw 1..{MAX_SHAPES} shapes (or answer skip / can't tell)")
    return items


def _shape(item: object, task: Task, num_classes: int, with_class: bool) -> dict:
    if not isinstance(item, dict):
        raise InvalidRequestError("each shape must be an object with x_min, y_min, x_max, y_max")
    try:
        coords = {k: float(item[k]) for k in ("x_min", "y_min", "x_max", "y_max")}
    except (KeyError, TypeError, ValueError):
        raise InvalidRequestError("each shape needs numeric x_min, y_min, x_max, y_max") from None
    width, height = task.image.width or 1e9, task.image.height or 1e9
    if not (0 <= coords["x_min"] < coords["x_max"] <= width and 0 <= coords["y_min"] < coords["y_max"] <= height):
        raise InvalidRequestError(f"shape {coords} is empty or outside the {width:g}x{height:g} image")
    if with_class:
        coords["class_id"] = _class(str(item.get("class_id", "")), num_classes)
    return coords
