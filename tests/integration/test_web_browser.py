"""A real browser (Debian's Chromium driven by Playwright) logs in and answers classification, detection (H-YOLO
boxes) and attention-region (H-Faster-RCNN) tasks on the hub's web server; the answers reach the device's replies
over real gRPC. Screenshots of each view are saved to tests/artifacts/."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from hgen.hub.app import HubApp
from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.web import PASSWORD, add_people, web_hub
from hgen.protos import hub_pb2
from hgen.hub.transports.grpc_server import GrpcTransport

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def timed(answer: Any) -> bool:
    """An answer's latency is a duration (wall time on the knowledge base's clock: no bound beyond that)."""
    return math.isfinite(answer.latency_s) and answer.latency_s >= 0.0


@pytest.fixture
def browser(chromium_required: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_required, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, web={"class_names": NAMES}) as app:
        add_people(app)
        yield app


def device_submits(hub: HubApp, log: ReplyLog) -> tuple[list[threading.Thread], dict[str, int]]:
    """Two classification samples and one detection sample, each batch on its own Submit stream."""
    device = GrpcDevice(f"127.0.0.1:{hub.transport(GrpcTransport).port}", log, call_timeout_s=90,
                        token=enroll(hub, "cam-1")["cam-1"].bearer)
    classify = [make_sample("cam-1", confidence=0.4, top=i) for i in (1, 2)]
    detect = [make_sample("cam-1", confidence=0.3, kind=hub_pb2.HDNN_KIND_YOLO)]
    threads = [threading.Thread(target=device.submit_until_replied, args=(make_request("cam-1", batch, m=1),),
                                daemon=True) for batch in (classify, detect)]
    for thread in threads:
        thread.start()
    return threads, {s.sample_id: k for s, k in zip(classify + detect, ("class", "class", "boxes"))}


def wait_for_samples(hub: HubApp, n: int, timeout: float) -> None:
    """Both Submit streams' samples are stored: woken by the hub's own work notification, not by sleeping."""
    import time

    from hgen.hub.kb.models import Sample

    generation, end = 0, time.monotonic() + timeout
    while hub.service.kb.count(Sample) < n:
        assert time.monotonic() < end, "the device's samples did not reach the hub"
        generation = hub.service.annotators.wait_for_work(generation, timeout=1.0)


def log_in(page, base: str, user: str, shot: Path | None = None) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    if shot is not None:
        page.screenshot(path=str(shot))
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#who")


def answer_current(page, artifacts: Path, answered: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    """Answer whatever task is shown: key '8' (Bag) or a click for classes; a drawn box (class Coat) otherwise."""
    page.wait_for_selector("#task")
    view = page.get_attribute("#task", "data-view")
    page.wait_for_function("document.getElementById('task-image').complete")
    if view == "class":
        if answered.get("key", 0) == 0:
            page.screenshot(path=str(artifacts / "web_annotate_classification.png"))
            answered["key"] = 1
            with page.expect_navigation():
                page.keyboard.press("9")  # number key 9 = class 8 (Bag)
        else:
            with page.expect_navigation():
                page.click("#class-3")  # Dress
    else:
        page.select_option("#box-class", "4")  # Coat
        box = page.locator("#overlay").bounding_box()
        page.mouse.move(box["x"] + 40, box["y"] + 60)
        page.mouse.down()
        page.mouse.move(box["x"] + 200, box["y"] + 300, steps=5)
        page.mouse.up()
        assert page.inner_text("#shape-count") == "1"
        page.screenshot(path=str(artifacts / "web_annotate_detection.png"))
        with page.expect_navigation():
            page.click("#submit-shapes")


def test_browser_login_answer_classification_and_detection(hub: HubApp, browser, artifacts_dir: Path) -> None:  # type: ignore[no-untyped-def]
    log = ReplyLog()
    threads, kinds = device_submits(hub, log)
    wait_for_samples(hub, 3, timeout=30)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    log_in(page, hub.web_url, "ann", artifacts_dir / "web_login.png")
    state: dict[str, int] = {}
    for _ in range(3):
        page.goto(f"{hub.web_url}/annotate")
        answer_current(page, artifacts_dir, state)
    assert log.wait_for(3, timeout=60), f"{3 - log.count()} replies missing"
    for thread in threads:
        thread.join(timeout=30)
    labels = {k: log.labels[s] for s, k in kinds.items() if k == "boxes"}
    classes = sorted(log.labels[s].aggregated.class_id for s, k in kinds.items() if k == "class")
    assert classes == [3, 8]
    box = labels["boxes"].aggregated.boxes.boxes[0]
    assert box.class_id == 4 and 0 <= box.x_min < box.x_max <= 28 and 0 <= box.y_min < box.y_max <= 28
    assert all(timed(r.answers[0]) and not r.answers[0].simulated for r in log.labels.values())
    page.goto(f"{hub.web_url}/annotate")
    page.screenshot(path=str(artifacts_dir / "web_annotate_empty.png"))
    operator = browser.new_page(viewport={"width": 1300, "height": 1000})
    log_in(operator, hub.web_url, "op")
    operator.goto(f"{hub.web_url}/operator")
    assert operator.inner_text("#queue-depth") == "0"
    assert "ann" in operator.inner_text("#annotators")
    operator.screenshot(path=str(artifacts_dir / "web_operator.png"), full_page=True)


def drag(page, start: tuple[int, int], end: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Press, move and release the mouse over the overlay; positions in display pixels from its corner."""
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + start[0], box["y"] + start[1])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0], box["y"] + end[1], steps=5)
    page.mouse.up()


def mark_regions(page, base: str, drags: list[tuple[tuple[int, int], tuple[int, int]]],  # type: ignore[no-untyped-def]
                 shot: Path | None = None) -> None:
    """Open the task, draw every drag as a region (the last one is a slip, undone), submit."""
    page.goto(f"{base}/annotate")
    page.wait_for_selector("#task")
    assert page.get_attribute("#task", "data-view") == "regions"
    assert page.inner_text("h1") == "Mark the regions that matter"
    page.wait_for_function("document.getElementById('task-image').complete")
    assert page.is_disabled("#submit-shapes")  # nothing marked yet: nothing to submit
    for start, end in drags:
        drag(page, start, end)
    assert page.inner_text("#shape-count") == str(len(drags))
    page.click("#undo")
    assert page.inner_text("#shape-count") == str(len(drags) - 1)
    if shot is not None:
        page.screenshot(path=str(shot))
    with page.expect_navigation():
        page.click("#submit-shapes")
    assert "No task right now" in page.inner_text("h1")


def region_task(hub: HubApp, seed: int, m: int) -> tuple[ReplyLog, GrpcDevice, Any, threading.Thread]:
    """One H-Faster-RCNN sample asked of `m` people for region_gmm, by a gRPC device waiting for its reply."""
    log = ReplyLog()
    device = GrpcDevice(f"127.0.0.1:{hub.transport(GrpcTransport).port}", log, call_timeout_s=90,
                        token=enroll(hub, "cam-1")["cam-1"].bearer)
    sample = make_sample("cam-1", confidence=0.3, kind=hub_pb2.HDNN_KIND_FASTER_RCNN,
                         image=png_image(size=64, seed=seed, channels=3))
    request = make_request("cam-1", [sample], m=m, aggregator="region_gmm")
    thread = threading.Thread(target=device.submit_until_replied, args=(request,), daemon=True)
    thread.start()
    wait_for_samples(hub, 1, timeout=30)
    return log, device, sample, thread


def region_reply(log: ReplyLog, device: GrpcDevice, sample: Any, thread: threading.Thread) -> hub_pb2.SampleReply:
    """The device's answered region_gmm reply to `region_task`'s sample."""
    assert log.wait_for(1, timeout=60), "the device got no reply"
    thread.join(timeout=30)
    device.close()
    reply = log.labels[sample.sample_id]
    assert reply.status == hub_pb2.REPLY_STATUS_ANSWERED and reply.aggregated.aggregator == "region_gmm"
    return reply


def test_browser_attention_regions_reach_the_device_aggregated(hub: HubApp, browser, artifacts_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Two people mark the region that matters on a 64x64 H-Faster-RCNN sample (display 640x640: 10 display pixels
    per image pixel, hgen.hub.web.display); region_gmm merges their near-identical regions into one, centred on their mean."""
    add_people(hub, annotators=("bob",), operators=())
    log, device, sample, thread = region_task(hub, seed=7, m=2)
    slip = ((300, 20), (420, 100))
    for user, region, shot in (("ann", ((100, 150), (400, 450)), artifacts_dir / "web_annotate_regions.png"),
                               ("bob", ((120, 170), (420, 470)), None)):
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        log_in(page, hub.web_url, user)
        mark_regions(page, hub.web_url, [region, slip], shot)
        page.close()
    reply = region_reply(log, device, sample, thread)
    given = {a.annotator_id: [(r.x_min, r.y_min, r.x_max, r.y_max) for r in a.regions.regions] for a in reply.answers}
    assert sorted(given) == ["ann", "bob"] and all(len(r) == 1 for r in given.values())  # the slip was undone
    assert given["ann"][0] == pytest.approx((10, 15, 40, 45), abs=0.1)  # display pixels / 10, sub-pixel layout
    assert given["bob"][0] == pytest.approx((12, 17, 42, 47), abs=0.1)
    assert all(timed(a) and not a.simulated for a in reply.answers)
    (merged,) = reply.aggregated.regions.regions
    assert (merged.x_min, merged.y_min, merged.x_max, merged.y_max) == pytest.approx((11, 16, 41, 46), abs=0.5)
    assert merged.weight == pytest.approx(1.0)


def test_browser_nothing_uncertain_answer_reaches_the_device_as_an_empty_mixture(hub: HubApp, browser) -> None:  # type: ignore[no-untyped-def]
    """Issue 21: on an H-Faster-RCNN task a person draws by mistake, then presses `n` ("Nothing uncertain / no
    object"): the page sends no region (not the drawn one), and the device's reply is region_gmm's empty mixture."""
    log, device, sample, thread = region_task(hub, seed=8, m=1)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    log_in(page, hub.web_url, "ann")
    page.goto(f"{hub.web_url}/annotate")
    page.wait_for_selector("#nothing")
    page.wait_for_function("document.getElementById('task-image').complete")
    drag(page, (100, 150), (400, 450))
    assert page.inner_text("#shape-count") == "1"
    with page.expect_navigation():
        page.keyboard.press("n")
    assert "No task right now" in page.inner_text("h1")
    page.close()
    reply = region_reply(log, device, sample, thread)
    (answer,) = reply.answers
    assert answer.WhichOneof("label") == "regions" and len(answer.regions.regions) == 0 and answer.operations == 1
    assert reply.aggregated.WhichOneof("label") == "regions" and len(reply.aggregated.regions.regions) == 0
