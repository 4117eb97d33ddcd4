"""The annotator page on a phone (Debian's Chromium driven by Playwright with a touch screen and a 390x844 viewport;
the hub, log-in and frames of test_web_browser and test_web_annotate_view): a box drawn with a finger at 2x zoom is
stored in the image's own pixels; a drag held past the zoomed view's edge scrolls it and the box stops at the image's
edge; two fingers move and pinch-zoom the view and draw nothing; a double tap or two quick keys send one answer, show the next task (not the hub's refusal of a second answer)
and never answer it before it has been shown; the page fits the phone's width with controls a finger can hit.
Touches are real touch input (CDP Input.dispatchTouchEvent), so the browser's own touch-action rules apply. The
page's clock is Playwright's, paused where a test needs "immediately after the next task appeared" to stay so.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from hgen.hub.app import HubApp
from hgen.protos import hub_pb2
from test_web_annotate_view import TIMEOUT_MS, dark_frame, stored_answer, submit
from test_web_browser import browser, hub, log_in  # noqa: F401  (browser, hub: fixtures)

PHONE = {"width": 390, "height": 844}
WIDTH, HEIGHT = 64, 48  # shown 640x480 (display.py: 10x), 366 CSS pixels wide on the phone at 1x
ARM_MS = 500  # annotate.js: the page after an answer takes answers this long after its image appeared
FINGER_MIN = 44  # CSS pixels: the common minimum for a control hit with a finger


def wide_frame() -> hub_pb2.Image:
    """A 64x48 colour frame (not square, so a mixed-up axis shows)."""
    pixels = np.random.default_rng(11).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    assert ok
    return hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=HEIGHT, width=WIDTH, channels=3)


def phone(browser: Any, hub: HubApp, paused_clock: bool = False) -> Any:
    """ann's annotator page on a phone; with `paused_clock`, the page's timers only run when the test says."""
    context = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=3)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, hub.web_url, "ann")
    if paused_clock:
        page.clock.install()
        page.clock.pause_at(time.time() + 3600)
    page.goto(f"{hub.web_url}/annotate")
    page.wait_for_selector("#frame.painted")
    return page


class Fingers:
    """Fingers on the page's touch screen, through the browser's own touch input (a 60 Hz screen: events 16 ms
    apart); a drag lifts while still moving, as a quick stroke does."""

    def __init__(self, page: Any) -> None:
        self.cdp = page.context.new_cdp_session(page)
        self.clock = time.time()

    def send(self, kind: str, *points: tuple[float, float]) -> None:
        """`points`: every finger on the screen after this event (none for touchEnd: all lift)."""
        self.clock += 0.016
        touches = [{"x": x, "y": y, "id": i + 1, "radiusX": 2, "radiusY": 2, "force": 1}
                   for i, (x, y) in enumerate(points)]
        self.cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touches, "timestamp": self.clock})

    def touch(self, kind: str, at: tuple[float, float] | None = None) -> None:
        self.send(kind, *([] if at is None else [at]))

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 6) -> None:
        self.touch("touchStart", start)
        for i in range(1, steps + 1):
            self.touch("touchMove", (start[0] + (end[0] - start[0]) * i / steps,
                                     start[1] + (end[1] - start[1]) * i / steps))
        self.touch("touchEnd")


def zoom_twice(page: Any) -> float:
    """Tap the 2x zoom; returns CSS pixels per image pixel."""
    page.tap('#zoom button[data-zoom="2"]')
    page.wait_for_selector('#frame[data-zoom="2"]')
    return page.locator("#frame").bounding_box()["width"] / WIDTH


def tap(page: Any, selector: str) -> None:
    """A tap by the touch screen at the control's centre (page.tap would wait for it to be enabled)."""
    page.locator(selector).scroll_into_view_if_needed()
    box = page.locator(selector).bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def answered(hub: HubApp, ids: list[str]) -> list[int]:
    """The classes of every stored answer to these samples, sorted."""
    return sorted(a.class_id for r in hub.service.kb.replies_for(ids) for a in r.answers)


def test_a_box_drawn_by_touch_at_2x_zoom_is_stored_in_the_images_pixels(hub: HubApp, browser: Any,  # noqa: F811
                                                                        artifacts_dir: Path) -> None:
    sample_id = submit(hub, wide_frame(), kind=hub_pb2.HDNN_KIND_YOLO)
    page = phone(browser, hub)
    page.select_option("#box-class", "4")
    scale = zoom_twice(page)
    page.eval_on_selector("#stage", "(s, at) => { s.scrollLeft = at[0]; s.scrollTop = at[1]; }",
                          [20 * scale, 10 * scale])  # image pixel (20, 10) at the stage's corner
    frame = page.locator("#frame").bounding_box()
    start, end = (23.5, 13.25), (41.75, 30.5)
    points = [(frame["x"] + x * scale, frame["y"] + y * scale) for x, y in (start, end)]
    Fingers(page).drag(points[0], points[1])
    assert page.inner_text("#shape-count") == "1"
    assert scale == pytest.approx(2 * 366 / WIDTH, abs=0.5)  # the image fills the phone's width (less margins)
    page.screenshot(path=str(artifacts_dir / "web_annotate_touch_box.png"))
    with page.expect_navigation():
        page.tap("#submit-shapes")  # the first tap after a quick stroke submits (it was taken as a fling's stop)
    (box,) = stored_answer(hub, sample_id).boxes.boxes
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == pytest.approx((*start, *end), abs=0.02)  # 1 CSS pixel
    assert box.class_id == 4
    page.context.close()


def test_a_touch_drag_held_past_the_zoomed_views_edge_scrolls_it_and_stops_at_the_image(
        hub: HubApp, browser: Any) -> None:  # noqa: F811
    sample_id = submit(hub, wide_frame(), kind=hub_pb2.HDNN_KIND_YOLO)
    page = phone(browser, hub)
    scale = zoom_twice(page)
    page.eval_on_selector("#stage", "s => { s.scrollLeft = 0; s.scrollTop = 0; }")
    stage = page.locator("#stage").bounding_box()
    frame = page.locator("#frame").bounding_box()
    finger = Fingers(page)
    finger.touch("touchStart", (frame["x"] + 10 * scale, frame["y"] + 8 * scale))  # image pixel (10, 8)
    outside = (stage["x"] + stage["width"] + 6, stage["y"] + stage["height"] + 30)  # right of and below the view
    finger.touch("touchMove", (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2))
    finger.touch("touchMove", outside)  # and held there: the view scrolls to its end
    page.wait_for_function("""() => { const s = document.getElementById('stage');
        return s.scrollLeft >= s.scrollWidth - s.clientWidth - 1
          && s.scrollTop >= s.scrollHeight - s.clientHeight - 1; }""")
    finger.touch("touchEnd")
    assert page.inner_text("#shape-count") == "1"
    with page.expect_navigation():
        page.tap("#submit-shapes")
    (box,) = stored_answer(hub, sample_id).boxes.boxes
    assert (box.x_min, box.y_min) == pytest.approx((10, 8), abs=0.02)
    assert (box.x_max, box.y_max) == (WIDTH, HEIGHT)  # the finger ended past the image: the box stops at its edge
    page.context.close()


def test_two_fingers_move_and_pinch_zoom_the_view_and_draw_nothing(hub: HubApp, browser: Any) -> None:  # noqa: F811
    submit(hub, wide_frame(), kind=hub_pb2.HDNN_KIND_YOLO)
    page = phone(browser, hub)
    zoom_twice(page)
    page.eval_on_selector("#stage", "s => { s.scrollLeft = 0; s.scrollTop = 0; }")
    stage = page.locator("#stage").bounding_box()
    x, y = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    fingers = Fingers(page)
    fingers.send("touchStart", (x - 40, y))
    fingers.send("touchStart", (x - 40, y), (x + 40, y))  # the second finger: no box is begun
    for i in range(1, 7):  # both move 60 CSS pixels left and 30 up: the view follows them
        fingers.send("touchMove", (x - 40 - 10 * i, y - 5 * i), (x + 40 - 10 * i, y - 5 * i))
    assert page.eval_on_selector("#stage", "s => [s.scrollLeft, s.scrollTop]") == pytest.approx([60, 30], abs=1)
    for i in range(1, 7):  # and spread from 80 to 140 CSS pixels apart (1.5 times or more: one zoom step)
        fingers.send("touchMove", (x - 100 - 5 * i, y - 30), (x - 20 + 5 * i, y - 30))
    fingers.send("touchEnd")
    assert page.get_attribute("#frame", "data-zoom") == "4"
    assert page.inner_text("#shape-count") == "0"
    assert page.is_disabled("#submit-shapes")
    page.context.close()


def test_a_double_tap_answers_once_and_the_next_task_waits_until_it_was_seen(hub: HubApp,  # noqa: F811
                                                                             browser: Any) -> None:
    ids = [submit(hub, dark_frame(seed=20 + i)[0]) for i in range(3)]
    page = phone(browser, hub, paused_clock=True)
    first = page.get_attribute("#task", "data-task")
    with page.expect_navigation():
        tap(page, "#class-2")
        tap(page, "#class-2")  # a double tap: the second lands on this page or on the next one
    page.wait_for_selector("#frame.painted")
    assert page.inner_text("h1") == "Which class is this?"  # the next task, not "Refused (409)"
    assert page.get_attribute("#task", "data-task") != first
    assert answered(hub, ids) == [2]
    tap(page, "#class-4")  # the next task's image appeared just now (the page's clock is paused)
    page.keyboard.press("5")
    assert page.get_attribute("#task", "data-state") == "waiting"
    page.clock.run_for(ARM_MS)
    page.wait_for_selector('#task[data-state="ready"]')
    with page.expect_navigation():
        tap(page, "#class-6")
    assert answered(hub, ids) == [2, 6]  # neither 4 nor 5 was sent to the task shown after the first answer
    page.context.close()


def test_two_quick_keys_answer_once_and_never_the_next_task(hub: HubApp, browser: Any) -> None:  # noqa: F811
    ids = [submit(hub, dark_frame(seed=30 + i)[0]) for i in range(3)]
    page = phone(browser, hub, paused_clock=True)
    with page.expect_navigation():
        page.keyboard.press("3")
        page.keyboard.press("3")
    page.wait_for_selector("#frame.painted")
    assert page.inner_text("h1") == "Which class is this?"
    assert answered(hub, ids) == [2]
    page.clock.run_for(ARM_MS)
    page.wait_for_selector('#task[data-state="ready"]')
    with page.expect_navigation():
        page.keyboard.press("8")
    page.keyboard.press("8")  # the second press, just after the next task appeared
    page.wait_for_selector("#frame.painted")
    page.clock.run_for(ARM_MS)
    page.wait_for_selector('#task[data-state="ready"]')
    assert page.is_enabled("#class-0") and page.is_enabled("#skip")
    with page.expect_navigation():
        page.keyboard.press("s")  # a skip releases the task; nothing is stored for it
    assert answered(hub, ids) == [2, 7]
    page.context.close()


def overflow(page: Any) -> dict[str, Any]:
    """The page's width against the phone's, and the controls a finger cannot hit (or cannot reach on screen)."""
    return page.evaluate("""(min) => {
        const small = [], outside = [];
        document.querySelectorAll('button, select, input[type=checkbox], header a').forEach(e => {
          const r = e.getBoundingClientRect();
          if (!r.width) { return; }  /* hidden */
          const hit = e.type === 'checkbox' ? e.closest('label').getBoundingClientRect() : r;
          if (hit.width < min || hit.height < min) { small.push(e.id || e.textContent.trim()); }
          if (r.left < 0 || r.right > innerWidth) { outside.push(e.id || e.textContent.trim()); }
        });
        return { inner: innerWidth, page: document.documentElement.scrollWidth, small: small, outside: outside };
      }""", FINGER_MIN)


@pytest.mark.parametrize("kind", [hub_pb2.HDNN_KIND_CNN, hub_pb2.HDNN_KIND_YOLO], ids=["class", "boxes"])
def test_the_page_fits_a_390px_phone_with_controls_a_finger_can_hit(hub: HubApp, browser: Any,  # noqa: F811
                                                                    artifacts_dir: Path, kind: int) -> None:
    submit(hub, wide_frame(), kind=kind)
    page = phone(browser, hub)
    page.screenshot(path=str(artifacts_dir / f"web_annotate_phone_{page.get_attribute('#task', 'data-view')}.png"))
    assert overflow(page) == {"inner": PHONE["width"], "page": PHONE["width"], "small": [], "outside": []}
    zoom_twice(page)  # the zoomed image scrolls inside its view, never the page
    assert overflow(page) == {"inner": PHONE["width"], "page": PHONE["width"], "small": [], "outside": []}
    page.context.close()


