"""The annotator page's views, one file each (`classes.py`, `boxes.py`, `regions.py`), found by name.

A view is what the page asks people for and how its form becomes the Answer label the sample's aggregator takes:
`class` (a class id), `boxes` (boxes with a class), `regions` (attention regions). An H-DNN kind's descriptor names
its view (`hgen.runtime.hdnn`, `view`); kinds asking for the same label share a view, so a new kind adds a file here
only when people answer it in a new way. The page, its script and the operator view read what differs from the
view's attributes (its prompt, partial template, guesses, drawing), never from its name.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm, Shape
from hgen.protos import hub_pb2
from hgen.runtime.registry import Registry


class AnswerView(Protocol):
    name: ClassVar[str]
    label: ClassVar[str]  # the Answer `label` oneof field it fills: class_id | boxes | regions
    allows_nothing: ClassVar[bool]  # may a person answer "nothing here" (the form's `nothing`)?
    nothing_label: ClassVar[str]  # that button's text ("" without one)
    nothing_title: ClassVar[str]  # what that answer does, on hover
    prompt: ClassVar[str]  # the page's heading
    template: ClassVar[str]  # the partial in templates/ (flat: setup.py ships templates/*) with its answer controls
    shows_guesses: ClassVar[bool]  # a sample without model probabilities gets decoy guesses (so gold looks alike)
    draws_shapes: ClassVar[bool]  # people drag rectangles over the image (the script's canvas)
    shape_class: ClassVar[bool]  # each drawn shape carries a class (the page's class select)
    shape_colour: ClassVar[str]  # "r, g, b" of drawn shapes ("" when nothing is drawn)
    hint: ClassVar[str]  # how to answer, under the controls

    def fill(self, answer: hub_pb2.Answer, form: AnswerForm, task: Task, num_classes: int) -> None:
        """Set the answer's label and operations from the form; InvalidRequestError for anything malformed."""

    def describe(self, answer: hub_pb2.Answer, class_names: tuple[str, ...]) -> str:
        """A short text of the answer's label for the operator's list of recent answers."""


VIEWS: Registry[AnswerView] = Registry("annotator view", package=__name__)


def get_view(name: str) -> AnswerView:
    return VIEWS.get(name)


def view_names() -> list[str]:
    return VIEWS.names()


def view_for_label(label: str) -> AnswerView:
    """The view that asks people for `label` (for samples of a kind this hub has no descriptor of)."""
    view = _asking_for(label)
    if view is None:
        raise InvalidRequestError(f"no annotator view asks for {label!r} answers")
    return view


def view_of_answer(answer: hub_pb2.Answer) -> AnswerView | None:
    """The view that fills the answer's label; None for an answer without one (a skip) or of a label no view asks
    for, so the operator page still shows the rest."""
    return _asking_for(answer.WhichOneof("label"))


def _asking_for(label: str | None) -> AnswerView | None:
    return next((view for view in map(get_view, view_names()) if view.label == label), None)


def check_class(class_id: int, num_classes: int) -> int:
    if not 0 <= class_id < num_classes:
        raise InvalidRequestError(f"class must be in 0..{num_classes - 1}, got {class_id}")
    return class_id


def said_nothing(form: AnswerForm) -> bool:
    """The form's explicit "nothing here" button (never an empty drawing, so a slip cannot send it); with shapes
    drawn as well, an InvalidRequestError."""
    if form.nothing is None:
        return False
    if form.shapes.strip() not in ("", "[]"):
        raise InvalidRequestError("answer either 'nothing here' or the shapes you drew, not both")
    return True


def coords(shape: Shape, task: Task, num_classes: int, with_class: bool) -> dict:
    """A drawn shape in the image's pixels, checked to lie inside the image and (for boxes) to carry a class."""
    found = {"x_min": shape.x_min, "y_min": shape.y_min, "x_max": shape.x_max, "y_max": shape.y_max}
    width, height = task.image.width or 1e9, task.image.height or 1e9
    if not (found["x_min"] < found["x_max"] <= width and found["y_min"] < found["y_max"] <= height):
        raise InvalidRequestError(f"shape {found} is empty or outside the {width:g}x{height:g} image")
    if with_class:
        if shape.class_id is None:
            raise InvalidRequestError("each box needs a class_id")
        found["class_id"] = check_class(shape.class_id, num_classes)
    return found
