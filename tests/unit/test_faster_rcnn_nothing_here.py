"""Issue 21: on an H-Faster-RCNN task a person can answer "nothing uncertain here / no object" (real hub, SQLite,
Flask test client for the annotator page): the form's `nothing` button stores an answer with an empty region list,
region_gmm aggregates everyone's "nothing" into an empty mixture, and the device's adapter, given that reply, keeps
its own proposals (the runtime's fusion returns the model's answer). Contradictory or misplaced "nothing" answers
are refused with 400 and nothing is stored."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.kinds import FrameSize, adapter_for
from hgen.hub.aggregators import AggregationInput, get_aggregator
from hgen.hub.app import HubApp
from hgen.hub.kb.models import AnswerRow
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub
from hgen.protos import hub_pb2
from hgen.runtime.hdnn import FusionParams, get_kind

PEOPLE = ("ann", "bob")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path) as app:
        add_people(app, annotators=PEOPLE)
        yield app


def submit(hub: HubApp, kind: int) -> hub_pb2.Sample:
    sample = make_sample("cam-1", confidence=0.2, kind=kind)
    assert hub.service.submit(make_request("cam-1", [sample], m=len(PEOPLE)), "grpc").accepted == [sample.sample_id]
    return sample


def open_task(hub: HubApp, user: str) -> tuple[object, str, str]:
    """(logged-in client, task id, CSRF token) of the task the annotator page shows `user`."""
    client = logged_in(hub, user)
    page = client.get("/annotate").get_data(as_text=True)
    return client, re.search(r'data-task="([^"]+)"', page).group(1), csrf_token_of(page)


def test_everyone_answering_nothing_here_gives_an_empty_mixture_and_the_device_keeps_its_proposals(
        hub: HubApp) -> None:
    sample = submit(hub, hub_pb2.HDNN_KIND_FASTER_RCNN)
    page = logged_in(hub, "ann").get("/annotate").get_data(as_text=True)
    assert 'data-view="regions"' in page and 'id="nothing"' in page
    for user in PEOPLE:
        client, task_id, token = open_task(hub, user)
        response = client.post(f"/task/{task_id}/answer", data={"kind": "regions", "nothing": "1", "shapes": "[]",
                                                                "csrf_token": token})
        assert response.status_code == 303, response.get_data(as_text=True)
    (reply,) = hub.service.kb.replies_for([sample.sample_id])
    assert reply.status == hub_pb2.REPLY_STATUS_ANSWERED
    assert [a.WhichOneof("label") for a in reply.answers] == ["regions", "regions"]
    assert all(len(a.regions.regions) == 0 and a.operations == 1 for a in reply.answers)
    assert reply.aggregated.aggregator == "region_gmm" and reply.aggregated.WhichOneof("label") == "regions"
    assert len(reply.aggregated.regions.regions) == 0

    # the device: an empty mixture is the model's own answer, not "no object"
    kind, params = get_kind("faster_rcnn"), FusionParams(1.0)
    outputs = np.random.default_rng(0).normal(0.0, 3.0, (1, 8, 8, kind.output_channels(10)))
    own = kind.predict(outputs, params)[0]
    assert len(own) > 0  # the random head proposes boxes, so keeping them is observable
    adapter = adapter_for("faster_rcnn")
    answers = adapter.fuse_answers(reply, outputs, FrameSize(64, 64))
    assert answers is not None and answers[0].shape == (0, 5)
    fused = kind.fuse(outputs, answers, params)[0]
    np.testing.assert_array_equal(fused.boxes, own.boxes)
    np.testing.assert_array_equal(fused.classes, own.classes)


def test_nothing_here_with_drawn_regions_is_refused_and_nothing_is_stored(hub: HubApp) -> None:
    submit(hub, hub_pb2.HDNN_KIND_FASTER_RCNN)
    client, task_id, token = open_task(hub, "ann")
    response = client.post(f"/task/{task_id}/answer", data={
        "kind": "regions", "nothing": "1", "csrf_token": token,
        "shapes": '[{"x_min": 1, "y_min": 2, "x_max": 9, "y_max": 12}]'})
    assert response.status_code == 400 and b"not both" in response.data
    empty = client.post(f"/task/{task_id}/answer", data={"kind": "regions", "shapes": "[]", "csrf_token": token})
    assert empty.status_code == 400  # an empty drawing is not "nothing here": that takes the explicit button
    assert hub.service.kb.count(AnswerRow) == 0


def test_a_box_task_has_a_no_object_answer_that_drops_the_models_boxes(hub: HubApp) -> None:
    """A person shown a false detection could only skip or say "can't tell" (the box page had no "no object"
    answer, while the SIMULATED crowd could send one through the API): the model's false box stood. Now everyone's
    "no object here" aggregates to an empty box list, and the device drops the boxes nobody drew."""
    sample = submit(hub, hub_pb2.HDNN_KIND_YOLO)
    page = logged_in(hub, "ann").get("/annotate").get_data(as_text=True)
    assert 'data-view="boxes"' in page and 'id="nothing"' in page and "No object here" in page
    for user in PEOPLE:
        client, task_id, token = open_task(hub, user)
        drawn_too = client.post(f"/task/{task_id}/answer", data={
            "kind": "boxes", "nothing": "1", "csrf_token": token,
            "shapes": '[{"x_min": 1, "y_min": 2, "x_max": 9, "y_max": 12, "class_id": 0}]'})
        assert drawn_too.status_code == 400 and b"not both" in drawn_too.data
        response = client.post(f"/task/{task_id}/answer", data={"kind": "boxes", "nothing": "1", "shapes": "[]",
                                                                "csrf_token": token})
        assert response.status_code == 303, response.get_data(as_text=True)
    (reply,) = hub.service.kb.replies_for([sample.sample_id])
    assert [a.WhichOneof("label") for a in reply.answers] == ["boxes", "boxes"]
    assert all(len(a.boxes.boxes) == 0 and a.operations == 1 for a in reply.answers)
    assert reply.aggregated.WhichOneof("label") == "boxes" and len(reply.aggregated.boxes.boxes) == 0

    kind, params = get_kind("yolo"), FusionParams(1.0)
    outputs = np.zeros((1, 4, 4, kind.output_channels(10)), np.float32)
    outputs[..., 0], outputs[0, 1, 2, 0], outputs[0, 1, 2, 5 + 7] = -9.0, 9.0, 12.0  # the model is sure of a 7
    assert len(kind.predict(outputs, params)[0]) == 1
    answers = adapter_for("yolo").fuse_answers(reply, outputs, FrameSize(64, 64))
    assert answers is not None and len(kind.fuse(outputs, answers, params)[0]) == 0


def regions_answer(annotator: str, *regions: tuple[float, float, float, float]) -> hub_pb2.Answer:
    return hub_pb2.Answer(annotator_id=annotator, regions=hub_pb2.RegionList(regions=[
        hub_pb2.Region(x_min=x0, y_min=y0, x_max=x1, y_max=y1, weight=1.0) for x0, y0, x1, y1 in regions]))


def test_region_gmm_keeps_what_someone_marked_beside_nothing_answers() -> None:
    aggregate = get_aggregator("region_gmm").aggregate
    mixed = aggregate(AggregationInput("s", (regions_answer("a"), regions_answer("b", (10, 10, 30, 40))), 2, 10))
    (region,) = mixed.regions.regions
    assert (region.x_min, region.y_min, region.x_max, region.y_max) == (10, 10, 30, 40)
    none = aggregate(AggregationInput("s", (regions_answer("a"), regions_answer("b")), 2, 10))
    assert none.WhichOneof("label") == "regions" and len(none.regions.regions) == 0 and none.confidence == 1.0
