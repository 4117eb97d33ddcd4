"""The `regions` view: rectangles over the regions a decision depends on (H-Faster-RCNN's attention regions), or
"nothing uncertain here / no object": an answer with an empty region list, which region_gmm takes (the device then
keeps its own proposals). That answer is an explicit button, never an empty drawing, so a slip cannot send it."""

from __future__ import annotations

from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, parse_shapes
from hgen.hub.web.views import VIEWS, coords
from hgen.protos import hub_pb2


class RegionsView:
    name = "regions"
    label = "regions"
    allows_nothing = True

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        if form.nothing is not None:
            if form.shapes.strip() not in ("", "[]"):
                raise InvalidRequestError("answer either 'nothing here' or the regions you drew, not both")
            answer.regions.SetInParent()
            answer.operations = 1  # one click
            return
        regions = [coords(shape, task, num_classes, with_class=False) for shape in parse_shapes(form.shapes)]
        answer.regions.regions.extend(hub_pb2.Region(**r, weight=1.0) for r in regions)
        answer.operations = len(regions)


VIEWS.add("regions", RegionsView())
