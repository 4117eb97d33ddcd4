"""Answering with many classes (Debian's Chromium driven by Playwright; the browser, log-in and helpers of
test_web_browser, test_web_annotate_view and test_web_annotate_touch): on a hub with 200 class names (accents, RTL,
full-width letters, quotes, "<script>"), "/" and a typed filter narrow the list by substring, case- and
accent-insensitively (Latin accents
only: Japanese voicing marks and Devanagari vowel signs count), and Enter answers the matching class; the model's guesses are one-click and number-key answers
listed in class order without percentages; the boxes view's class select is filtered the same way; on a phone the
filter and the buttons are finger-sized; names never become markup or script. With 10 classes keys 1..0 still
answer and the guesses are clickable too. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hgen.hub.app import HubApp
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.web import add_people, web_hub
from hgen.protos import hub_pb2
from test_web_annotate_touch import FINGER_MIN, phone, tap
from test_web_annotate_view import dark_frame, open_task, stored_answer, submit
from test_web_browser import browser, hub, log_in  # noqa: F401  (browser, hub: fixtures)

CLASSES = 200
SPECIAL = {3: "Café", 17: "Crème brûlée", 42: "<script>window.hgenXss = 1</script>", 57: 'Say "hi" & <b>bye</b>',
           88: "قهوة عربية", 99: "ｆｕｌｌ width", 120: "Ice cream 🍦", 150: "café au lait",
           161: "<img src=x onerror=\"window.hgenXss = 2\">", 130: "ガラス", 131: "カラス", 132: "किताब",
           133: "काला", 134: "한국"}
NAMES = [SPECIAL.get(i, f"Product {i:03d}") for i in range(CLASSES)]


@pytest.fixture
def many(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, num_classes=CLASSES, web={"class_names": NAMES}) as app:
        add_people(app)
        yield app


def ask(hub: HubApp, top: dict[int, float], kind: int = hub_pb2.HDNN_KIND_CNN) -> str:
    """A 200-class sample whose model puts `top`'s probabilities on those classes; returns its id."""
    probs = np.full(CLASSES, (1.0 - sum(top.values())) / (CLASSES - len(top)))
    for class_id, p in top.items():
        probs[class_id] = p
    sample = make_sample("cam-1", confidence=max(top.values()), num_classes=CLASSES, kind=kind,
                         image=dark_frame(seed=len(top))[0])
    sample.output.ClearField("class_probabilities")
    sample.output.class_probabilities.extend(probs.tolist())
    assert hub.service.submit(make_request("cam-1", [sample], m=1), "grpc").accepted == [sample.sample_id]
    return sample.sample_id


def next_task(page: Any, hub: HubApp) -> None:
    """The annotator's next task, once answers are taken (after an answer, ARM_MS after its image)."""
    page.goto(f"{hub.web_url}/annotate")
    page.wait_for_selector('#task[data-state="ready"]')


def shown(page: Any, selector: str) -> list[str]:
    """The names of the matching elements a person can see."""
    return page.eval_on_selector_all(selector, "es => es.filter(e => e.offsetParent !== null)"
                                               ".map(e => e.dataset.name)")


def hold_submits(page: Any) -> None:
    page.evaluate("""() => { window.sent = 0; window.hold = e => { window.sent += 1; e.preventDefault(); };
        document.getElementById('answer-form').addEventListener('submit', window.hold); }""")


def submits_held(page: Any) -> int:
    return page.evaluate("() => { document.getElementById('answer-form').removeEventListener('submit', window.hold);"
                         " return window.sent; }")


def no_script_ran(page: Any, dialogs: list[Any]) -> None:
    assert page.evaluate("() => window.hgenXss === undefined") and dialogs == []
    assert page.eval_on_selector_all("#answer-form script, #answer-form img, #answer-form b", "es => es.length") == 0


def test_a_typed_filter_and_enter_answer_the_matching_class(many: HubApp, browser: Any,  # noqa: F811
                                                            artifacts_dir: Path) -> None:
    first = ask(many, {5: 0.4, 6: 0.3, 7: 0.2})
    page = open_task(browser, many, ready='#task[data-state="ready"]')
    dialogs: list[Any] = []
    page.on("dialog", lambda d: (dialogs.append(d), d.dismiss()))
    assert len(shown(page, "#class-list .class-btn")) == CLASSES  # the whole list, before anything is typed
    hold_submits(page)
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "class-filter" and page.input_value("#class-filter") == ""
    page.keyboard.press("Enter")  # an empty box takes nothing (the form's implicit submit would send class 0)
    page.keyboard.type("zzz")
    page.keyboard.press("Enter")  # nor does a box nothing matches
    assert submits_held(page) == 0 and "No class matches" in page.inner_text("#class-filter-count")
    page.fill("#class-filter", "")
    page.keyboard.type("cafe")
    assert shown(page, "#class-list .class-btn") == ["Café", "café au lait"]
    assert page.inner_text("#class-filter-count") == "2 of 200; Enter: Café"  # the exact name before the first
    page.screenshot(path=str(artifacts_dir / "web_annotate_many_classes_filter.png"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert stored_answer(many, first).class_id == 3
    for typed, class_id in (("CREME BRULEE", 17), ("café a", 150), ("full", 99), ("قهوة", 88), ("script", 42),
                            ('"hi" & <b', 57), ("onerror", 161),
                            ("カラス", 131), ("ガラス", 130), ("कि", 132),  # a script's own marks are letters
                            ("하", 134), ("한ㄱ", 134)):  # a Hangul syllable still being typed
        sample_id = ask(many, {5: 0.4, 6: 0.3, 7: 0.2})
        next_task(page, many)
        page.keyboard.press("/")
        page.keyboard.type(typed)
        assert shown(page, "#class-list .class-btn") == [NAMES[class_id]], typed
        assert page.inner_text("#class-filter-count") == f"1 of 200; Enter: {NAMES[class_id]}"
        assert page.text_content(f"#class-{class_id}") == NAMES[class_id]  # the raw name, as text
        no_script_ran(page, dialogs)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert stored_answer(many, sample_id).class_id == class_id, typed
    page.close()


def test_the_guesses_answer_with_a_click_or_their_number_key(many: HubApp, browser: Any,  # noqa: F811
                                                             artifacts_dir: Path) -> None:
    top = {150: 0.4, 42: 0.3, 199: 0.2}  # the model's order; the page lists them in class order, unranked
    first = ask(many, top)
    page = open_task(browser, many, ready='#task[data-state="ready"]')
    dialogs: list[Any] = []
    page.on("dialog", lambda d: (dialogs.append(d), d.dismiss()))
    assert shown(page, "#guesses .class-btn") == [NAMES[42], NAMES[150], NAMES[199]]
    assert page.inner_text("#guesses").split() == ["1", *NAMES[42].split(), "2", "café", "au", "lait", "3",
                                                   "Product", "199"]  # key hints and names: no percentage, no rank
    no_script_ran(page, dialogs)
    page.screenshot(path=str(artifacts_dir / "web_annotate_many_classes_guesses.png"))
    with page.expect_navigation():
        page.click("#guess-150")
    assert stored_answer(many, first).class_id == 150
    for key, class_id in (("3", 199), ("1", 42)):
        sample_id = ask(many, top)
        next_task(page, many)
        with page.expect_navigation():
            page.keyboard.press(key)
        assert stored_answer(many, sample_id).class_id == class_id
    page.close()


def test_with_ten_classes_keys_1_to_0_answer_and_the_guesses_are_clickable(hub: HubApp,  # noqa: F811
                                                                            browser: Any) -> None:
    sample_id = submit(hub, dark_frame(seed=6)[0])  # the model: 3 (0.4), then 0 and 1
    page = open_task(browser, hub, ready='#task[data-state="ready"]')
    assert page.locator("#class-filter-box").count() == 0  # 10 classes: no filter, the list as it was
    assert page.inner_text("#guesses").split() == ["1", "T-shirt", "2", "Trouser", "4", "Dress"]  # their own keys
    with page.expect_navigation():
        page.click("#guess-3")
    assert stored_answer(hub, sample_id).class_id == 3
    for key, class_id in (("0", 9), ("1", 0)):
        sample_id = submit(hub, dark_frame(seed=6)[0])
        next_task(page, hub)
        with page.expect_navigation():
            page.keyboard.press(key)
        assert stored_answer(hub, sample_id).class_id == class_id
    page.close()


def test_the_box_class_filter_sets_the_next_boxs_class(many: HubApp, browser: Any) -> None:  # noqa: F811
    sample_id = ask(many, {5: 0.4, 6: 0.3, 7: 0.2}, kind=hub_pb2.HDNN_KIND_YOLO)
    page = open_task(browser, many, ready='#task[data-state="ready"]')
    dialogs: list[Any] = []
    page.on("dialog", lambda d: (dialogs.append(d), d.dismiss()))
    assert page.get_attribute("#task", "data-view") == "boxes"
    hold_submits(page)
    page.keyboard.press("/")
    page.keyboard.type("CAFE AU")
    visible = page.eval_on_selector_all("#box-class option", "os => os.filter(o => !o.hidden).map(o => o.value)")
    assert visible == ["150"]
    page.keyboard.press("Enter")  # takes the class; the form's implicit submit would send no box
    assert submits_held(page) == 0 and page.input_value("#box-class") == "150"
    assert page.evaluate("document.activeElement.id") != "box-class-filter"  # keys are the page's again
    assert page.eval_on_selector_all("#box-class option", "os => os.filter(o => o.hidden).length") == 0
    assert page.inner_text("#class-filter-count") == "Next box: café au lait"
    assert page.eval_on_selector('#box-class option[value="42"]', "o => o.dataset.name") == NAMES[42]
    no_script_ran(page, dialogs)
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 300, steps=5)
    page.mouse.up()
    assert page.inner_text("#shape-count") == "1"
    with page.expect_navigation():
        page.click("#submit-shapes")
    (stored,) = stored_answer(many, sample_id).boxes.boxes
    assert stored.class_id == 150
    page.close()


def test_on_a_phone_the_filter_and_the_class_buttons_are_finger_sized(many: HubApp, browser: Any,  # noqa: F811
                                                                      artifacts_dir: Path) -> None:
    sample_id = ask(many, {5: 0.4, 6: 0.3, 7: 0.2})
    page = phone(browser, many)
    page.wait_for_selector('#task[data-state="ready"]')
    width = page.evaluate("document.documentElement.clientWidth")
    for selector in ("#class-filter", "#guess-5", "#class-0", "#class-199", "#skip"):
        page.locator(selector).scroll_into_view_if_needed()
        found = page.locator(selector).bounding_box()
        assert found["height"] >= FINGER_MIN and found["x"] >= 0 and found["x"] + found["width"] <= width, selector
    tap(page, "#class-filter")
    page.keyboard.type("creme")
    assert shown(page, "#class-list .class-btn") == ["Crème brûlée"]
    page.screenshot(path=str(artifacts_dir / "web_annotate_many_classes_phone.png"))
    with page.expect_navigation():
        tap(page, "#class-17")
    assert stored_answer(many, sample_id).class_id == 17
    page.context.close()
