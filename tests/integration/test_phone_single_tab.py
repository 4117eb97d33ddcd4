"""One tab per phone device (android_bridge/src/tablock.ts): two tabs of one provisioned device in one browser
(a tab and a re-opened installed window alike) share its MQTT client id and its IndexedDB outbox. Both used to
run: the broker kicked one connection off for the other, both reconnected for ever, and both ran the camera and
resent from the same outbox. Now the second page says the device runs in another tab or window and starts nothing
(no camera, no socket, no outbox); its button takes the device over: the first page stops its camera, link and
pipeline and says so, and the second runs, sending and fusing what the first left in the outbox.

Headless Debian Chromium (Playwright) with the fake camera, a real Mosquitto (WebSockets) and hub.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hgen.hub.testing.phone import (
    PhoneAppMissingError,
    PhoneBundle,
    built_app,
    launch_chromium,
    mqtt_phone_hub,
    new_page,
    open_phone_link,
    phone_bundle,
    phone_link,
    wait_for_device,
)

BUNDLE = "lenet5-digits"
DEVICE = "phone-tabs"
# Every WebSocket a page opens (mqtt.js opens one per connection attempt), kept for the test to count.
SOCKETS = """(() => {
  const opened = [];
  window.hgenSockets = opened;
  window.WebSocket = new Proxy(window.WebSocket, { construct(target, args) {
    const socket = new target(...args); opened.push(socket); return socket; } });
})();"""
# The page's device state and its sockets (opened, still open), read in one evaluation.
STATE = """(() => { const s = window.hgenDevice; const video = document.getElementById("camera");
  return { tab: s.tab, status: s.status, error: s.error, camera: s.camera, connected: s.connected,
    version: s.version, captured: s.captured, frames: s.totals.frames, stored: s.stored,
    maxSamples: s.outbox.maxSamples, video: video.srcObject !== null,
    sockets: window.hgenSockets.length, open: window.hgenSockets.filter(w => w.readyState <= 1).length }; })()"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> PhoneBundle:
    try:
        built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))
    return phone_bundle(tmp_path_factory.mktemp("phone-tabs"))


@pytest.fixture
def running(tmp_path: Path, bundle: PhoneBundle, mosquitto_required: str) -> Iterator[Any]:
    with mqtt_phone_hub(tmp_path / "hub.db", bundle, BUNDLE, audit_share=0.0, audit_seed=0) as (hub, _):
        yield hub


def test_a_second_tab_runs_nothing_until_it_takes_the_device_over(
        chromium_required: str, running: Any, bundle: PhoneBundle, artifacts_dir: Path) -> None:
    hub = running
    hub.pause_crowd()  # samples wait in the shared outbox: the page taking over must be the one fusing them
    manager, browser = launch_chromium(bundle.video, chromium_required)
    try:
        context = browser.new_context()
        context.add_init_script(SOCKETS)
        first, first_log = new_page(context)
        open_phone_link(first, phone_link(hub.app, DEVICE, BUNDLE))
        wait_for_device(first, "s.connected && s.totals.stored >= 3 || s.error")
        second, second_log = new_page(context)
        second.goto(f"{hub.app.web_url}/device")
        wait_for_device(second, "s.tab === 'another tab' || s.connected || s.error")
        notice = second.evaluate("document.getElementById('tab-notice')?.innerText ?? null")
        # the first page goes on undisturbed while the second one is open (no connection kicked off)
        stored = first.evaluate("window.hgenDevice.totals.stored")
        wait_for_device(first, f"s.totals.stored >= {stored + 3} || s.error")
        idle, before = second.evaluate(STATE), first.evaluate(STATE)
        second.screenshot(path=str(artifacts_dir / "phone_second_tab.png"))
        # the second page said so, and ran nothing: no bundle, outbox, camera or connection
        assert idle["tab"] == "another tab", (idle, second_log)
        assert "already runs in another tab or window" in notice
        assert (idle["status"], idle["error"], idle["version"], idle["maxSamples"]) == (
            "running in another tab", None, None, 0), idle
        assert (idle["camera"], idle["video"], idle["captured"], idle["frames"]) == ("not started", False, 0, 0), idle
        assert (idle["connected"], idle["sockets"]) == (False, 0), idle
        # the first page kept its one connection meanwhile (a second connection with its client id kicks it off)
        assert before["error"] is None and before["connected"] and before["sockets"] == 1, (before, first_log)

        with second.expect_navigation():  # its button reloads it, taking the device over
            second.click("#take-over-button")
        wait_for_device(first, "s.tab === 'taken over' && s.camera === 'stopped: taken over' || s.error")
        stopped = first.evaluate(STATE)
        wait_for_device(second, "s.tab === 'running' && s.connected && s.totals.stored >= 3 || s.error")
        hub.resume_crowd()  # the replies now reach the second page: it fuses what the first page stored
        wait_for_device(second, f"{stopped['stored']!r}.every(id => s.fused.some(f => f.sampleId === id)) || s.error")
        taken, after = second.evaluate(STATE), first.evaluate(STATE)
        first_notice = first.inner_text("#tab-notice")
        first.screenshot(path=str(artifacts_dir / "phone_taken_over.png"))
    finally:
        browser.close()
        manager.stop()
    logs = first_log + second_log
    # take-over: the first page stopped its camera, link and pipeline, and said so
    assert "taken over by another tab or window" in first_notice
    assert (stopped["status"], stopped["error"], stopped["connected"], stopped["video"]) == (
        "taken over", None, False, False), stopped
    assert (after["frames"], after["open"]) == (stopped["frames"], 0), (stopped, after)
    # it disconnected before the second page connected: its one connection was never kicked off
    assert stopped["sockets"] == 1, stopped
    # the second page runs the device on one connection, and fused what the first one stored before it stopped
    assert taken["error"] is None and taken["sockets"] == 1 and taken["camera"] == "streaming", (taken, logs)
    assert set(stopped["stored"]) <= hub.sample_ids()
    assert hub.hub_counts()[2] == 0, "a sample got two different replies"
    # and stopping failed nowhere (each step's failure is logged, session.ts)
    assert not [line for line in logs if line.startswith("pageerror") or ("stopping" in line and "error" in line)], logs
