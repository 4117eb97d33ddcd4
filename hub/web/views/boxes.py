"""The `boxes` view: a box with a class around each object (H-YOLO), in the image's own pixels, or "no object
here": an answer with an empty box list, which box_union aggregates like any other (when most people give it, the
model's boxes nobody drew are dropped on the device: a false detection is corrected, not only skipped)."""

from __future__ import annotations

from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, parse_shapes
from hgen.hub.web.views import VIEWS, coords, said_nothing
from hgen.protos import hub_pb2


class BoxesView:
    name = "boxes"
    label = "boxes"
    allows_nothing = True
    nothing_label = "No object here"
    nothing_title = "None of the model's boxes is an object: they are dropped if most people agree"
    prompt = "Draw a box around each object"
    template = "view_shapes.html"
    shows_guesses = False
    draws_shapes = True
    shape_class = True
    shape_colour = "0, 230, 118"
    hint = "Drag a box around each object."

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        if said_nothing(form):
            answer.boxes.SetInParent()
            answer.operations = 1  # one click
            return
        boxes = [coords(shape, task, num_classes, with_class=self.shape_class) for shape in parse_shapes(form.shapes)]
        answer.boxes.boxes.extend(hub_pb2.Box(**b) for b in boxes)
        answer.operations = len(boxes)

    def describe(self, answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
        return f"{len(answer.boxes.boxes)} boxes"


VIEWS.add("boxes", BoxesView())
