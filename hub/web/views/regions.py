"""The `regions` view: rectangles over the regions a decision depends on (H-Faster-RCNN's attention regions)."""

from __future__ import annotations

from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, parse_shapes
from hgen.hub.web.views import VIEWS, coords
from hgen.protos import hub_pb2


class RegionsView:
    name = "regions"
    label = "regions"

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        regions = [coords(shape, task, num_classes, with_class=False) for shape in parse_shapes(form.shapes)]
        answer.regions.regions.extend(hub_pb2.Region(**r, weight=1.0) for r in regions)
        answer.operations = len(regions)


VIEWS.add("regions", RegionsView())
