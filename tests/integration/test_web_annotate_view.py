"""The annotator page shows the hard frames devices send so that people can answer them (Debian's Chromium driven by
Playwright, the hub and log-in of test_web_browser): a dark 28x28 frame is enlarged with hard pixel edges and zooms;
auto levels, computed from the frame's own pixels, brighten what is drawn and stay on for the next task; a box drawn at
4x zoom is stored in the image's own pixels; number keys answer the right class, while Ctrl + a key (copy, save,
switch tab) answers nothing. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from hgen.hub.app import HubApp
from hgen.hub.testing.samples import make_request, make_sample
from hgen.protos import hub_pb2
from test_web_browser import browser, hub, log_in  # noqa: F401  (browser, hub: fixtures; pytest puts this folder on sys.path)

SIZE = 28
TIMEOUT_MS = 15_000  # a missing control fails in seconds, not after Playwright's 30 s default


def dark_frame(seed: int) -> tuple[hub_pb2.Image, np.ndarray]:
    """A low-light frame as hgen's `lowlight` field makes it (x ** 2.5 plus sensor noise, std 0.02): a garment of
    mid greys (0.35..0.75 before darkening) on black. Returns the PNG sent and its grey pixels."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    clean = np.where((x >= 6) & (x < 22) & (y >= 4) & (y < 24), 0.35 + 0.4 * (x - 6) / 15, 0.0)
    noisy = clean ** 2.5 + np.random.default_rng(seed).normal(0.0, 0.02, clean.shape)
    grey = np.round(np.clip(noisy, 0.0, 1.0) * 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", grey)
    assert ok
    return hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=SIZE, width=SIZE, channels=1), grey


def submit(hub: HubApp, image: hub_pb2.Image, kind: int = hub_pb2.HDNN_KIND_CNN) -> str:
    """One sample asked of one person, as a device submits it; returns its id."""
    sample = make_sample("cam-1", confidence=0.4, top=3, kind=kind, image=image)
    assert hub.service.submit(make_request("cam-1", [sample], m=1), "grpc").accepted == [sample.sample_id]
    return sample.sample_id


def stored_answer(hub: HubApp, sample_id: str) -> hub_pb2.Answer:
    (reply,) = hub.service.kb.replies_for([sample_id])
    assert reply.status == hub_pb2.REPLY_STATUS_ANSWERED
    (answer,) = reply.answers
    assert answer.annotator_id == "ann" and not answer.simulated
    return answer


def open_task(browser: Any, hub: HubApp, ready: str = "#frame.painted") -> Any:
    """Log in as ann and open her task; `ready`: what to wait for (by default the view canvas showing the image)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, hub.web_url, "ann")
    page.goto(f"{hub.web_url}/annotate")
    page.wait_for_selector(ready)
    return page


def shown_pixels(page: Any) -> np.ndarray:
    """The red channel the view canvas draws (grey frames: all channels alike), at the image's own size."""
    values = page.evaluate("""() => { const c = document.getElementById('view');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const out = []; for (let i = 0; i < d.length; i += 4) { out.push(d[i]); } return [c.width, c.height, out]; }""")
    width, height, reds = values
    return np.array(reds, np.uint8).reshape(height, width)


def rendering(page: Any, selector: str) -> str:
    return page.eval_on_selector(selector, "e => getComputedStyle(e).imageRendering")


def test_a_dark_28px_frame_is_shown_large_with_hard_pixels_and_zooms(hub: HubApp, browser: Any,  # noqa: F811
                                                                     artifacts_dir: Path) -> None:
    image, grey = dark_frame(seed=1)
    submit(hub, image)
    page = open_task(browser, hub)
    shown = page.locator("#view").bounding_box()
    assert shown["width"] >= 16 * SIZE and shown["height"] >= 16 * SIZE  # 616 CSS pixels (display.py: 22x)
    assert rendering(page, "#view") == "pixelated"
    assert np.array_equal(shown_pixels(page), grey)  # levels at their defaults: the frame exactly as sent
    stage = page.locator("#stage").bounding_box()
    page.click('#zoom button[data-zoom="4"]')
    assert page.get_attribute("#frame", "data-zoom") == "4"
    zoomed = page.locator("#view").bounding_box()
    assert zoomed["width"] == pytest.approx(4 * shown["width"], abs=1)
    assert zoomed["height"] == pytest.approx(4 * shown["height"], abs=1)
    assert page.locator("#stage").bounding_box() == pytest.approx(stage)  # the page's layout stays; the stage scrolls
    assert rendering(page, "#view") == "pixelated"
    page.screenshot(path=str(artifacts_dir / "web_annotate_zoom.png"))
    page.keyboard.press("-")
    assert page.get_attribute("#frame", "data-zoom") == "2"
    page.mouse.move(stage["x"] + 300, stage["y"] + 300)
    page.keyboard.down("Control")  # Ctrl + wheel (a trackpad's pinch) zooms in at the pointer
    page.mouse.wheel(0, -120)
    page.keyboard.up("Control")
    page.wait_for_selector('#frame[data-zoom="4"]')
    page.close()


def test_auto_levels_brighten_the_drawn_pixels_and_stay_on_for_the_next_task(hub: HubApp, browser: Any,  # noqa: F811
                                                                             artifacts_dir: Path) -> None:
    frames = [dark_frame(seed=2), dark_frame(seed=3)]
    ids = [submit(hub, image) for image, _ in frames]
    page = open_task(browser, hub)
    before = shown_pixels(page)
    assert any(np.array_equal(before, grey) for _, grey in frames)  # either task may come first
    page.click("#auto-levels")
    page.wait_for_selector('#view[data-levels="auto b0 c0"]')
    after = shown_pixels(page).astype(int)
    assert after.mean() >= 1.8 * before.mean()  # the garment, at 7..49 % grey, is lifted
    assert np.all(after[before == 0] == 0)  # black stays black: the range is the frame's own
    order = np.argsort(before.ravel(), kind="stable")
    assert np.all(np.diff(after.ravel()[order]) >= 0)  # brighter pixels stay brighter
    page.focus("#brightness")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector('#view[data-levels="auto b10 c0"]')
    assert shown_pixels(page).astype(int).sum() > after.sum()
    page.screenshot(path=str(artifacts_dir / "web_annotate_auto_levels.png"))
    with page.expect_navigation():
        page.keyboard.press("3")  # the focused slider does not take number keys: they answer
    page.wait_for_selector('#view[data-levels="auto b10 c0"]')  # the next task: the same levels, kept
    assert page.is_checked("#auto-levels") and page.input_value("#brightness") == "10"
    page.click("#view-reset")
    page.wait_for_selector('#view[data-levels="b0 c0"]')
    assert not page.is_checked("#auto-levels")
    assert page.evaluate("JSON.parse(localStorage.getItem('hgen.annotate.levels'))") == {
        "brightness": 0, "contrast": 0, "auto": False}
    (answered,) = hub.service.kb.replies_for(ids)  # the first task; the second is still open
    assert stored_answer(hub, answered.sample_id).class_id == 2
    page.close()


def test_a_box_drawn_at_4x_zoom_is_stored_in_the_images_pixels(hub: HubApp, browser: Any,  # noqa: F811
                                                               artifacts_dir: Path) -> None:
    image, _ = dark_frame(seed=4)
    sample_id = submit(hub, image, kind=hub_pb2.HDNN_KIND_YOLO)
    page = open_task(browser, hub)
    assert page.get_attribute("#task", "data-view") == "boxes"
    page.keyboard.press("5")  # the next box's class: the fifth, Coat (4)
    page.click('#zoom button[data-zoom="4"]')
    frame = page.locator("#frame").bounding_box()
    scale = frame["width"] / SIZE  # 88 CSS pixels per image pixel
    page.eval_on_selector("#stage", "(s, at) => { s.scrollLeft = at[0]; s.scrollTop = at[1]; }",
                          [12 * scale, 8 * scale])  # image pixel (12, 8) at the stage's corner
    frame = page.locator("#frame").bounding_box()
    start, end = (13.5, 9.25), (17.25, 14.5)
    points = [(round(frame["x"] + x * scale), round(frame["y"] + y * scale)) for x, y in (start, end)]
    page.mouse.move(*points[0])
    page.mouse.down()
    page.mouse.move(*points[1], steps=5)
    page.mouse.up()
    assert page.inner_text("#shape-count") == "1"
    page.screenshot(path=str(artifacts_dir / "web_annotate_zoomed_box.png"))
    with page.expect_navigation():
        page.click("#submit-shapes")
    (box,) = stored_answer(hub, sample_id).boxes.boxes
    expected = [(p[0] - frame["x"]) / scale for p in points] + [(p[1] - frame["y"]) / scale for p in points]
    assert (box.x_min, box.x_max, box.y_min, box.y_max) == pytest.approx(expected, abs=0.02)  # 2 screen pixels
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == pytest.approx((*start, *end), abs=0.02)
    assert box.class_id == 4
    page.close()


def test_number_keys_answer_their_class_and_ctrl_keys_answer_nothing(hub: HubApp, browser: Any) -> None:  # noqa: F811
    image, _ = dark_frame(seed=5)
    sample_id = submit(hub, image)
    page = open_task(browser, hub, ready="#class-6")
    assert page.inner_text("#class-6").startswith("7")  # the key's hint on its button
    page.evaluate("""() => { window.sent = 0; window.hold = e => { window.sent += 1; e.preventDefault(); };
        document.getElementById('answer-form').addEventListener('submit', window.hold); }""")
    for chord in ("Control+3", "Control+c", "Control+s", "Alt+n", "Meta+1"):  # switch tab, copy, save, ...
        page.keyboard.press(chord)
    sent = page.evaluate("() => { document.getElementById('answer-form').removeEventListener('submit', window.hold);"
                         " return window.sent; }")
    assert sent == 0
    with page.expect_navigation():
        page.keyboard.press("7")
    assert stored_answer(hub, sample_id).class_id == 6
    page.close()
