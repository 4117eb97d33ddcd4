"""Audit faults in the annotator views: the page, its script, the decoy guesses and the operator's answer list take
what differs per view from the view's own attributes, never from its name (real hub, SQLite, Flask test client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.hub.app import HubApp
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, logged_in, web_hub
from hgen.hub.web.stats import label_text
from hgen.hub.web.views import get_view, view_names
from hgen.hub.web.views.boxes import BoxesView
from hgen.hub.web.views.classes import ClassView
from hgen.protos import hub_pb2

TEMPLATES = Path(__file__).parents[2] / "hub" / "web" / "templates"
NAMES = ("zero", "one", "two", "three", "coat")
ATTRIBUTES = {"prompt": str, "template": str, "shows_guesses": bool, "draws_shapes": bool, "shape_class": bool,
              "shape_colour": str, "hint": str, "allows_nothing": bool, "nothing_label": str, "nothing_title": str}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, web={"class_names": list(NAMES)}) as app:
        add_people(app, annotators=("ann",))
        yield app


def page_of(hub: HubApp, kind: int, *, probabilities: bool = True) -> str:
    sample = make_sample("cam-1", confidence=0.4, top=3, kind=kind)
    if not probabilities:
        sample.output.ClearField("class_probabilities")
    assert hub.service.submit(make_request("cam-1", [sample], m=1), "grpc").accepted == [sample.sample_id]
    return logged_in(hub, "ann").get("/annotate").get_data(as_text=True)


@pytest.mark.parametrize("name", view_names())
def test_every_view_says_what_the_page_needs(name: str) -> None:
    view = get_view(name)
    for attribute, kind in ATTRIBUTES.items():
        assert isinstance(getattr(view, attribute, None), kind), f"view {name} lacks {attribute}"
    assert (TEMPLATES / view.template).is_file()
    assert view.draws_shapes == bool(view.shape_colour)  # a drawing view says how its shapes look
    assert callable(getattr(view, "describe", None))


def test_the_page_reads_the_views_attributes(hub: HubApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BoxesView, "prompt", "Box every coat")
    monkeypatch.setattr(BoxesView, "shape_colour", "1, 2, 3")
    monkeypatch.setattr(BoxesView, "nothing_label", "No coat here")
    page = page_of(hub, hub_pb2.HDNN_KIND_YOLO)
    assert "<h1>Box every coat</h1>" in page
    assert 'data-draws="true"' in page and 'data-shape-class="true"' in page and 'data-colour="1, 2, 3"' in page
    assert 'id="box-class"' in page and 'id="submit-shapes"' in page and 'id="nothing"' in page
    assert "No coat here" in page
    assert 'class="class-btn"' not in page


def test_regions_page_draws_classless_shapes_and_offers_nothing_here(hub: HubApp) -> None:
    page = page_of(hub, hub_pb2.HDNN_KIND_FASTER_RCNN)
    assert 'data-view="regions"' in page and 'data-shape-class="false"' in page and 'id="nothing"' in page
    assert 'id="box-class"' not in page and "Mark the regions that matter" in page


def test_class_page_has_buttons_and_no_canvas_drawing(hub: HubApp) -> None:
    page = page_of(hub, hub_pb2.HDNN_KIND_CNN)
    assert 'data-draws="false"' in page and 'id="class-4"' in page and 'id="submit-shapes"' not in page


@pytest.mark.parametrize("shows", [True, False])
def test_decoy_guesses_follow_the_views_flag(hub: HubApp, monkeypatch: pytest.MonkeyPatch, shows: bool) -> None:
    monkeypatch.setattr(ClassView, "shows_guesses", shows)
    page = page_of(hub, hub_pb2.HDNN_KIND_CNN, probabilities=False)
    assert ('id="guesses"' in page) == shows
    assert page.count("<li>") == (3 if shows else 0)


def test_operator_answer_text_is_the_views_description() -> None:
    assert label_text(hub_pb2.Answer(class_id=4), NAMES) == "coat"
    assert label_text(hub_pb2.Answer(class_id=7), NAMES) == "7"  # beyond the named classes: the id
    boxes = hub_pb2.Answer()
    boxes.boxes.boxes.add(x_max=1, y_max=1)
    assert label_text(boxes, NAMES) == "1 boxes"
    nothing = hub_pb2.Answer()
    nothing.regions.SetInParent()
    assert label_text(nothing, NAMES) == "0 regions"
    assert label_text(hub_pb2.Answer(), NAMES) == "-"  # no label at all


def test_a_views_description_is_what_the_operator_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BoxesView, "describe", lambda self, answer, names: f"{len(answer.boxes.boxes)} cars")
    boxes = hub_pb2.Answer()
    boxes.boxes.boxes.add(x_max=1, y_max=1)
    assert label_text(boxes, NAMES) == "1 cars"
