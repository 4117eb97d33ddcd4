"""The `boxes` view: a box with a class around each object (H-YOLO), in the image's own pixels."""

from __future__ import annotations

from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, parse_shapes
from hgen.hub.web.views import VIEWS, coords
from hgen.protos import hub_pb2


class BoxesView:
    name = "boxes"
    label = "boxes"
    allows_nothing = False
    prompt = "Draw a box around each object"
    template = "view_shapes.html"
    shows_guesses = False
    draws_shapes = True
    shape_class = True
    shape_colour = "0, 230, 118"
    hint = "Drag a box around each object."

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        boxes = [coords(shape, task, num_classes, with_class=self.shape_class) for shape in parse_shapes(form.shapes)]
        answer.boxes.boxes.extend(hub_pb2.Box(**b) for b in boxes)
        answer.operations = len(boxes)

    def describe(self, answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
        return f"{len(answer.boxes.boxes)} boxes"


VIEWS.add("boxes", BoxesView())
