"""Issue 21: the hub reads a sample's H-DNN kind from its descriptor (real hub, SQLite, Flask test client): the
default aggregator, the label form a named aggregator must take, the annotator page's view; an H-Faster-RCNN sample
(written before its descriptor existed, when it was served by the aggregator its request names) gets the regions view."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.hub.app import HubApp
from hgen.hub.kb.models import Sample
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub
from hgen.protos import hub_pb2


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, aggregator="dawid_skene") as app:  # a configured class aggregator, not the default
        add_people(app, annotators=("ann",))
        yield app


def submit(hub: HubApp, kind: int, aggregator: str = "") -> tuple[hub_pb2.Sample, object]:
    sample = make_sample("cam-1", confidence=0.4, kind=kind)
    return sample, hub.service.submit(make_request("cam-1", [sample], m=1, aggregator=aggregator), "grpc")


def stored(hub: HubApp, sample: hub_pb2.Sample) -> tuple[str, int]:
    with hub.service.kb.session() as s:
        row = s.get(Sample, sample.sample_id)
        return row.aggregator, row.hdnn_kind


def view_shown(hub: HubApp) -> str:
    page = logged_in(hub, "ann").get("/annotate").get_data(as_text=True)
    return re.search(r'data-view="([^"]+)"', page).group(1)


def test_classifier_samples_keep_the_hubs_configured_aggregator(hub: HubApp) -> None:
    sample, result = submit(hub, hub_pb2.HDNN_KIND_CNN)
    assert result.accepted == [sample.sample_id]
    assert stored(hub, sample) == ("dawid_skene", hub_pb2.HDNN_KIND_CNN)
    assert view_shown(hub) == "class"


def test_unspecified_kind_is_the_default_kind(hub: HubApp) -> None:
    sample, result = submit(hub, hub_pb2.HDNN_KIND_UNSPECIFIED)  # what older devices send
    assert result.accepted == [sample.sample_id]
    assert stored(hub, sample) == ("dawid_skene", hub_pb2.HDNN_KIND_CNN)


def test_detection_samples_get_their_descriptors_aggregator_and_view(hub: HubApp) -> None:
    sample, result = submit(hub, hub_pb2.HDNN_KIND_YOLO)
    assert result.accepted == [sample.sample_id]
    assert stored(hub, sample) == ("box_union", hub_pb2.HDNN_KIND_YOLO)
    assert view_shown(hub) == "boxes"


def test_an_aggregator_that_cannot_take_the_kinds_answers_is_refused(hub: HubApp) -> None:
    sample, result = submit(hub, hub_pb2.HDNN_KIND_YOLO, aggregator="majority")
    assert not result.accepted
    (reply,) = result.immediate
    assert reply.status == hub_pb2.REPLY_STATUS_REJECTED
    assert reply.reject_reason == hub_pb2.REJECT_REASON_INVALID_REQUEST
    assert "boxes" in reply.detail and "yolo" in reply.detail
    assert hub.service.kb.count(Sample) == 0  # nothing stored


def test_a_kind_without_descriptor_is_asked_what_its_named_aggregator_takes(hub: HubApp) -> None:
    sample, result = submit(hub, hub_pb2.HDNN_KIND_FASTER_RCNN, aggregator="region_gmm")
    assert result.accepted == [sample.sample_id]
    assert stored(hub, sample) == ("region_gmm", hub_pb2.HDNN_KIND_FASTER_RCNN)
    c = logged_in(hub, "ann")
    page = c.get("/annotate").get_data(as_text=True)
    assert 'data-view="regions"' in page
    task_id = re.search(r'data-task="([^"]+)"', page).group(1)
    token = csrf_token_of(page)
    wrong = c.post(f"/task/{task_id}/answer", data={"kind": "class", "class_id": "1", "csrf_token": token})
    assert wrong.status_code == 400  # the view is the aggregator's, not what the form claims
    good = c.post(f"/task/{task_id}/answer", data={"kind": "regions", "csrf_token": token,
                                                   "shapes": '[{"x_min": 1, "y_min": 2, "x_max": 9, "y_max": 12}]'})
    assert good.status_code == 303
    reply = hub.service.kb.replies_for([sample.sample_id])[0]
    assert reply.aggregated.aggregator == "region_gmm" and len(reply.aggregated.regions.regions) == 1
