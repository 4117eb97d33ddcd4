"""Annotating through the web UI: answers reach the device's reply, skip / can't tell release the task, another
annotator's task and non-image uploads are refused with nothing lost, rendered text is escaped, gold pauses; a
sample about to close is not handed to a person who could not answer it in time."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import AnswerRow, Assignment, Sample, TaskEvent
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.web import add_people, logged_in, web_config, web_hub
from hgen.hub.web import answers
from hgen.protos import hub_pb2

NAMES = ["zero", "one", "two", "<script>alert(1)</script>", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, web={"class_names": NAMES}, gold={"share": 0.5, "min_answers": 2, "pause_below": 0.6}) as app:
        add_people(app, annotators=("ann", "bob"))
        yield app


def task_page(c: FlaskClient) -> tuple[str, str, str]:
    page = c.get("/annotate").get_data(as_text=True)
    task_id = re.search(r'data-task="([^"]+)"', page).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return page, task_id, token


def assigned_seconds_ago(hub: HubApp, task_id: str, seconds: float) -> None:
    """Date the task's assignment back: the route times an answer on the knowledge base's clock (the wall clock
    here), so the hub's own measure is then at least `seconds`, however fast the test runs."""
    with hub.service.kb.session() as s:
        s.execute(update(Assignment).where(Assignment.id == task_id)
                  .values(assigned_at=Assignment.assigned_at - seconds))


def submit(hub: HubApp, m: int = 1, kind: int = hub_pb2.HDNN_KIND_CNN) -> hub_pb2.Sample:
    sample = make_sample("cam-1", confidence=0.4, top=3, kind=kind)
    result = hub.service.submit(make_request("cam-1", [sample], m=m), "grpc")
    assert result.accepted == [sample.sample_id]
    return sample


def test_classification_answer_reaches_the_reply_with_time(hub: HubApp) -> None:
    sample = submit(hub)
    c = logged_in(hub, "ann")
    page, task_id, token = task_page(c)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page  # escaped
    assert re.search(r"<kbd>4</kbd> &lt;script&gt;", page)  # number key per class, guesses shown
    image = c.get(f"/task/{task_id}/image")
    assert image.status_code == 200 and image.mimetype == "image/png"
    assigned_seconds_ago(hub, task_id, 10.0)  # the hub saw 10 s or more pass: the page's 1.5 s is believable
    response = c.post(f"/task/{task_id}/answer", data={"class_id": "7", "kind": "class", "elapsed_ms": "1500",
                                                       "csrf_token": token})
    assert response.status_code == 303
    reply = hub.service.kb.replies_for([sample.sample_id])[0]
    assert reply.status == hub_pb2.REPLY_STATUS_ANSWERED and reply.aggregated.class_id == 7
    assert reply.answers[0].annotator_id == "ann" and not reply.answers[0].simulated
    assert reply.answers[0].latency_s == 1.5


def test_a_page_claiming_more_time_than_the_hub_saw_gets_the_hubs_time(hub: HubApp) -> None:
    sample = submit(hub)
    c = logged_in(hub, "ann")
    _, task_id, token = task_page(c)
    assigned_seconds_ago(hub, task_id, 10.0)
    response = c.post(f"/task/{task_id}/answer", data={"class_id": "7", "kind": "class",
                                                       "elapsed_ms": str(3600 * 1000), "csrf_token": token})
    assert response.status_code == 303
    latency_s = hub.service.kb.replies_for([sample.sample_id])[0].answers[0].latency_s
    assert 10.0 <= latency_s < 3600.0  # what the hub saw (10 s and the test's own run), not the claimed hour


@pytest.mark.parametrize(("elapsed_ms", "server_s", "expected"), [
    ("1500", 2.0, 1.5),  # within what the hub saw: the page's own measure, to the millisecond
    ("2900", 2.0, 2.9),  # up to 1 s more than the hub saw (clocks and transit) is still the page's
    ("3100", 2.0, 2.0),  # more than that: the hub's time
    ("0", 2.0, 2.0), ("-5", 2.0, 2.0), ("nan", 2.0, 2.0), ("inf", 2.0, 2.0), ("soon", 2.0, 2.0),
    ("1500", -0.5, 0.0),  # a hub clock stepped back never makes a negative time
])
def test_time_to_answer_is_the_pages_only_within_what_the_hub_saw(elapsed_ms: str, server_s: float,
                                                                   expected: float) -> None:
    assert answers.latency(elapsed_ms, server_s) == pytest.approx(expected)


def test_skip_and_cant_tell_release_the_task_to_someone_else(hub: HubApp) -> None:
    sample = submit(hub)
    ann, bob = logged_in(hub, "ann"), logged_in(hub, "bob")
    _, task_id, token = task_page(ann)
    assert ann.post(f"/task/{task_id}/answer", data={"release": "cant_tell", "kind": "class",
                                                     "csrf_token": token}).status_code == 303
    assert "No task right now" in ann.get("/annotate").get_data(as_text=True)  # never offered to ann again
    _, bob_task, bob_token = task_page(bob)
    assert bob_task != task_id
    bob.post(f"/task/{bob_task}/answer", data={"release": "skip", "csrf_token": bob_token})
    events = {hub.service.kb.count(TaskEvent, kind="cant_tell"), hub.service.kb.count(TaskEvent, kind="skip")}
    assert events == {1}
    assert hub.service.kb.count(Sample, status="assigned") == 1  # still open for others, nothing lost
    assert hub.service.kb.count(AnswerRow) == 0 and sample.sample_id


def test_answering_someone_elses_task_is_refused_and_changes_nothing(hub: HubApp) -> None:
    submit(hub)
    ann, bob = logged_in(hub, "ann"), logged_in(hub, "bob")
    _, task_id, _ = task_page(ann)
    bob_token = re.search(r'name="csrf_token" value="([^"]+)"', bob.get("/annotate").get_data(as_text=True)).group(1)
    response = bob.post(f"/task/{task_id}/answer", data={"class_id": "1", "kind": "class", "csrf_token": bob_token})
    assert response.status_code == 403 and "not yours" in response.get_data(as_text=True)
    assert bob.get(f"/task/{task_id}/image").status_code == 403  # nor see its image
    assert hub.service.kb.count(AnswerRow) == 0
    assert hub.service.kb.count(Assignment, status="open") == 1  # ann's task is intact


@pytest.fixture
def timed_hub(tmp_path: Path) -> Iterator[tuple[HubApp, Clock]]:
    """A web hub on a simulated clock, not started (no sweep thread): the test moves time and sweeps itself."""
    config = parse_hub_config(web_config(tmp_path))
    clock = Clock()
    app = HubApp(config, service=HubService(config, KnowledgeBase.open(config.knowledge_base.url, clock=clock),
                                            clock=clock))
    add_people(app, annotators=("ann",))
    try:
        yield app, clock
    finally:
        app.stop()


def test_a_task_closing_before_a_person_could_answer_is_not_handed_out(timed_hub: tuple[HubApp, Clock]) -> None:
    """A sample handed to a person half a second before its deadline closed under them, and their answer got a 403.
    People are handed only samples with tasks.min_time_to_answer_s (30 s) left, or half the deadline of a device
    that waits less than twice that; a nearer one waits for its deadline untouched, and one handed out just in time
    takes an answer given within those 30 s."""
    hub, clock = timed_hub
    assert hub.config.tasks.min_time_to_answer_s == 30.0
    soon, later, short = (make_sample("cam-1", confidence=0.4, top=3) for _ in range(3))
    hub.service.submit(make_request("cam-1", [soon], m=1, deadline_s=40, now=clock.now), "grpc")
    clock.now += 39.5
    ann = logged_in(hub, "ann")
    assert 'id="no-task"' in ann.get("/annotate").get_data(as_text=True)  # half a second left
    hub.service.submit(make_request("cam-1", [later], m=1, deadline_s=30.5, now=clock.now), "grpc")
    _, task_id, token = task_page(ann)
    assert hub.service.kb.sample_of_task(task_id) == later.sample_id
    clock.now += 30.0  # the person took 30 s; the first sample's deadline passed meanwhile
    hub.service.sweep_once()
    answered = ann.post(f"/task/{task_id}/answer", data={"class_id": "7", "kind": "class", "csrf_token": token})
    assert answered.status_code == 303
    replies = {r.sample_id: r.status for r in hub.service.kb.replies_for([soon.sample_id, later.sample_id])}
    assert replies == {soon.sample_id: hub_pb2.REPLY_STATUS_EXPIRED, later.sample_id: hub_pb2.REPLY_STATUS_ANSWERED}
    hub.service.submit(make_request("cam-1", [short], m=1, deadline_s=20, now=clock.now), "grpc")
    _, task_id, _ = task_page(ann)  # a device that waits 20 s gets people while 10 s are left
    assert hub.service.kb.sample_of_task(task_id) == short.sample_id


def test_detection_boxes_with_class_are_validated_and_stored(hub: HubApp) -> None:
    sample = submit(hub, kind=hub_pb2.HDNN_KIND_YOLO)
    c = logged_in(hub, "ann")
    page, task_id, token = task_page(c)
    assert 'data-view="boxes"' in page
    bad = c.post(f"/task/{task_id}/answer", data={"kind": "boxes", "csrf_token": token,
                                                   "shapes": '[{"x_min": 5, "y_min": 5, "x_max": 90, "y_max": 9}]'})
    assert bad.status_code == 400 and "outside" in bad.get_data(as_text=True)
    good = c.post(f"/task/{task_id}/answer", data={"kind": "boxes", "csrf_token": token, "shapes":
                  '[{"x_min": 2, "y_min": 3, "x_max": 12, "y_max": 20, "class_id": 4}]'})
    assert good.status_code == 303
    reply = hub.service.kb.replies_for([sample.sample_id])[0]
    box = reply.aggregated.boxes.boxes[0]
    assert (box.x_min, box.y_max, box.class_id) == (2, 20, 4)


def test_non_image_upload_is_refused_and_gold_pauses_a_bad_annotator(hub: HubApp) -> None:
    op = logged_in(hub, "op")
    token = re.search(r'name="csrf_token" value="([^"]+)"', op.get("/operator").get_data(as_text=True)).group(1)
    import io

    refused = op.post("/operator/gold", data={"class_id": "2", "csrf_token": token,
                                              "image": (io.BytesIO(b"#!/bin/sh\nrm -rf /\n"), "cat.png")},
                      content_type="multipart/form-data")
    assert refused.status_code == 415 and "not an image" in refused.get_data(as_text=True)
    assert hub.service.gold.count() == 0
    for seed in range(3):
        png = png_image(seed=seed).data
        added = op.post("/operator/gold", data={"class_id": "2", "csrf_token": token,
                                                "image": (io.BytesIO(png), "g.png")}, content_type="multipart/form-data")
        assert added.status_code == 303
    assert hub.service.gold.count() == 3
    ann = logged_in(hub, "ann")
    for _ in range(4):  # half of ann's tasks are gold here (one in each two, at a random place), and ann answers 9 to everything
        submit(hub)
        _, task_id, tok = task_page(ann)
        assert ann.post(f"/task/{task_id}/answer", data={"class_id": "9", "kind": "class", "csrf_token": tok}
                        ).status_code == 303
        if hub.service.gold.paused_reason("ann"):
            break
    assert "below 60%" in (hub.service.gold.paused_reason("ann") or "")
    assert ann.get("/annotate").status_code == 401  # pausing ended ann's sessions (issue 16)
    assert "You are paused" in logged_in(hub, "ann").get("/annotate").get_data(as_text=True)
    operator_page = op.get("/operator").get_data(as_text=True)
    assert "paused: gold accuracy" in operator_page
    op.post("/operator/annotator", data={"annotator": "ann", "action": "resume", "csrf_token": token})
    assert hub.service.gold.paused_reason("ann") is None


def test_samples_are_shown_at_a_screen_size_keeping_their_aspect_ratio():
    from hgen.hub.web.display import display_size

    assert display_size(28, 28) == display_size(28, 28, 640) and display_size(28, 28).crisp
    assert (display_size(28, 28).width, display_size(28, 28).height) == (616, 616)  # 22x, whole pixels
    big = display_size(3840, 2160)
    assert (big.width, big.height, big.crisp) == (640, 360, False)
    wide = display_size(96, 48)
    assert (wide.width, wide.height, wide.crisp) == (576, 288, True)
    assert display_size(0, 0).width == 448


def test_class_names_default_to_the_deployed_bundles_labels(tmp_path):
    from types import SimpleNamespace

    from hgen.hub.config import bundle_labels

    good, other = tmp_path / "good", tmp_path / "other"
    for folder, labels in ((good, ["cat", "dog", "fox"]), (other, ["a", "b"])):
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(manifest_with(labels)))
    config = SimpleNamespace(num_classes=3, retrain=SimpleNamespace(models=[
        SimpleNamespace(bundle=tmp_path / "missing"), SimpleNamespace(bundle=other), SimpleNamespace(bundle=good)]))
    assert bundle_labels(config) == ("cat", "dog", "fox")  # a missing bundle and a wrong class count are passed over
    assert bundle_labels(SimpleNamespace(num_classes=3, retrain=SimpleNamespace(models=[]))) == ()


def manifest_with(labels):
    return {"schema_version": 1, "model": {"name": "m", "version": "1.0.0"}, "created": "2026-01-01T00:00:00Z",
            "target": "x86_64", "engines": [{"name": "litert", "file": "model.tflite", "sha256": "0" * 64, "size": 1}],
            "input": {"shape": [1, 8, 8, 3]}, "output_shape": [1, len(labels)], "labels": labels, "tau": 0.5,
            "temperature": 1.0, "lambda": 0.1}
