"""The `class` view: one class per sample (H-CNN), chosen by a button or its number key."""

from __future__ import annotations

from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm
from hgen.hub.web.views import VIEWS, check_class
from hgen.protos import hub_pb2


class ClassView:
    name = "class"
    label = "class_id"
    allows_nothing = False
    nothing_label = nothing_title = ""
    prompt = "Which class is this?"
    template = "view_class.html"
    shows_guesses = True
    draws_shapes = False
    shape_class = False
    shape_colour = ""
    hint = ""

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        if form.class_id is None:
            raise InvalidRequestError("choose a class (or answer skip / can't tell)")
        answer.class_id = check_class(form.class_id, num_classes)
        answer.operations = 1

    def describe(self, answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
        return class_names[answer.class_id] if answer.class_id < len(class_names) else str(answer.class_id)


VIEWS.add("class", ClassView())
