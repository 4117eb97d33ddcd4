"""The `regions` view: rectangles over the regions a decision depends on (H-Faster-RCNN's attention regions), or
"nothing uncertain here / no object": an answer with an empty region list, which region_gmm takes (the device then
keeps its own proposals). That answer is an explicit button, never an empty drawing, so a slip cannot send it."""

from __future__ import annotations

from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, parse_shapes
from hgen.hub.web.views import VIEWS, coords, said_nothing
from hgen.protos import hub_pb2


class RegionsView:
    name = "regions"
    label = "regions"
    allows_nothing = True
    nothing_label = "Nothing uncertain / no object"
    nothing_title = "The model keeps its own answer"
    prompt = "Mark the regions that matter"
    template = "view_shapes.html"
    shows_guesses = False
    draws_shapes = True
    shape_class = False
    shape_colour = "255, 179, 0"
    hint = "Drag a rectangle over each region the decision depends on."

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        if said_nothing(form):
            answer.regions.SetInParent()
            answer.operations = 1  # one click
            return
        regions = [coords(shape, task, num_classes, with_class=self.shape_class) for shape in parse_shapes(form.shapes)]
        answer.regions.regions.extend(hub_pb2.Region(**r, weight=1.0) for r in regions)
        answer.operations = len(regions)

    def describe(self, answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
        return f"{len(answer.regions.regions)} regions"


VIEWS.add("regions", RegionsView())
