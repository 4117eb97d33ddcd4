"""A phone left running for weeks, in Debian's headless Chromium (Playwright, the fake camera playing a held-out
`.y4m`): the page keeps a bounded window of per-frame records (it kept every frame's, ~320 MB a day at 10 fps);
a browser that refuses to store a sample (its quota) costs that sample only, counted, the stream going on (it left
the page "failed" for good); a camera that stops is shown and started again; the screen wake lock is asked for
again when the page is visible again, and the storage asked to persist. After a reconnect the outbox is resent a
page of images at a time (every stored image was read at once), and the service worker keeps one versioned copy of
a bundle (it kept every version a hot swap fetched). The outbox's caps, deadlines, refunds and the resend's
waiting for acknowledgements are unit-tested (android_bridge/test/outbox.test.ts).
"""

from __future__ import annotations

import re
import uuid
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
from hgen.hub.testing.services import free_port
from hgen.hub.testing.web import add_people, web_hub

BUNDLE = "lenet5-digits"
WINDOW = 50  # ?keep=50: the window, small so a short run overflows it

# The page's wake lock and persistence answers, counted: a wake lock whose release the test triggers (as hiding
# the page does), a visibility the test sets, and a browser that refuses persistence.
KEEPALIVE = """(() => {
  window.__wakeRequests = 0; window.__persistCalls = 0; window.__visibility = "visible";
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true, get: () => window.__visibility });
  Object.defineProperty(Document.prototype, "hidden", { configurable: true,
    get: () => window.__visibility !== "visible" });
  const wakeLock = { request: async () => {
    window.__wakeRequests += 1;
    const sentinel = new EventTarget();
    sentinel.release = async () => sentinel.dispatchEvent(new Event("release"));
    window.__sentinel = sentinel;
    return sentinel;
  } };
  Object.defineProperty(Navigator.prototype, "wakeLock", { configurable: true, get: () => wakeLock });
  StorageManager.prototype.persisted = async () => false;
  StorageManager.prototype.persist = async () => { window.__persistCalls += 1; return false; };
})()"""

# The most outbox values (stored images) one IndexedDB transaction read.
READS = """(() => {
  window.__largestRead = 0;
  const perTransaction = new WeakMap();
  for (const method of ["get", "getAll"]) {
    const original = IDBObjectStore.prototype[method];
    IDBObjectStore.prototype[method] = function (...args) {
      const request = original.apply(this, args);
      const store = this;
      request.addEventListener("success", () => {
        if (store.name !== "outbox") return;
        const n = Array.isArray(request.result) ? request.result.length : request.result === undefined ? 0 : 1;
        const total = (perTransaction.get(store.transaction) ?? 0) + n;
        perTransaction.set(store.transaction, total);
        window.__largestRead = Math.max(window.__largestRead, total);
      });
      return request;
    };
  }
})()"""

# The paths of the bundles the service worker keeps, copied into `window.__kept` as they change: a cache is read
# asynchronously, and wait_for_function does not wait for a promise (it is truthy at once).
WATCH_BUNDLES = """() => setInterval(async () => {
  window.__kept = (await (await caches.open("hgen-device-bundles")).keys()).map(r => new URL(r.url).pathname);
}, 100)"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> PhoneBundle:
    try:
        built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))
    return phone_bundle(tmp_path_factory.mktemp("phone-longrun"))


# Stores one outbox entry in the page's database at version 1, as a phone running the earlier page has it.
LEGACY_OUTBOX = """async (entry) => {
  entry.payload = new Uint8Array(entry.payload);
  const open = indexedDB.open("hgen-device", 1);
  open.onupgradeneeded = () => open.result.createObjectStore("outbox", { keyPath: "sampleId" });
  const db = await new Promise((ok, no) => { open.onsuccess = () => ok(open.result); open.onerror = () => no(open.error); });
  const tx = db.transaction("outbox", "readwrite");
  tx.objectStore("outbox").put(entry);
  await new Promise((ok, no) => { tx.oncomplete = ok; tx.onerror = () => no(tx.error); });
  db.close();
}"""


def legacy_entry(device: str, sample_id: str) -> dict[str, Any]:
    """An outbox entry as the earlier page stored it (no place in line, size or deadline of its own), made now."""
    import io
    import time

    from hgen.protos import hub_pb2
    from PIL import Image

    made = int(time.time() * 1000)
    image = io.BytesIO()
    Image.new("RGBA", (56, 56), (90, 90, 90, 255)).save(image, "PNG")
    request = hub_pb2.AnnotationRequest(batch_id=sample_id, device_id=device, annotators_wanted=3)
    request.deadline.FromMilliseconds(made + 600_000)
    request.sent_at.FromMilliseconds(made)
    sample = request.samples.add(sample_id=sample_id, device_id=device, bundle_name=BUNDLE, bundle_version="0.1.0")
    sample.captured_at.FromMilliseconds(made)
    sample.image.CopyFrom(hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=image.getvalue(), height=56, width=56,
                                        channels=4))
    sample.output.class_probabilities.extend([0.1] * 10)
    sample.output.confidence = 0.1
    sample.output.kind = hub_pb2.HDNN_KIND_CNN
    return {"sampleId": sample_id, "payload": list(request.SerializeToString()), "logits": [0.0] * 10, "top1": 0,
            "labour": 9.0, "version": "0.1.0", "storedAt": made}


def publish(app: Any, archive: Path, version: str) -> None:
    from hgen.compiler.bundle import sha256_file
    from hgen.hub.kb.store import BundleRecord

    app.service.kb.add_bundle(BundleRecord(BUNDLE, version, sha256_file(archive), archive.stat().st_size, b"",
                                           str(archive), 1.0))


def test_phone_keeps_a_window_survives_a_full_quota_and_a_stopped_camera(
        chromium_required: str, bundle: PhoneBundle, tmp_path: Path, artifacts_dir: Path) -> None:
    # a broker nobody listens on: every uncertain frame's sample waits in the outbox
    unreachable = f"ws://127.0.0.1:{free_port()}"
    with web_hub(tmp_path, phones={"public_key": str(bundle.public_key), "mqtt_websocket_url": unreachable}) as app:
        add_people(app)
        publish(app, bundle.archive, "0.1.0")
        manager, browser = launch_chromium(bundle.video, chromium_required)
        try:
            context = browser.new_context()
            context.add_init_script(KEEPALIVE)
            page, log = new_page(context)
            cdp = context.new_cdp_session(page)
            open_phone_link(page, phone_link(app, "phone-long", BUNDLE))
            page.goto(f"{app.web_url}/device?keep={WINDOW}")
            wait_for_device(page, f"s.totals.frames >= {3 * WINDOW} && s.totals.stored >= 3 || s.error")
            window = page.evaluate("window.hgenDevice")
            shown_storage = page.text_content("#storage")
            persist_calls = page.evaluate("window.__persistCalls")
            # hidden (the browser releases the wake lock), then visible again: asked for again
            page.evaluate("""() => { window.__visibility = "hidden"; window.__sentinel.release();
                document.dispatchEvent(new Event("visibilitychange")); window.__visibility = "visible";
                document.dispatchEvent(new Event("visibilitychange")); }""")
            page.wait_for_function("() => window.__wakeRequests >= 2 && window.hgenDevice.wakeLock === 'held'",
                                   timeout=10_000)
            # the browser's quota reached: each sample's store fails (QuotaExceededError)
            origin = app.web_url.rstrip("/")
            usage = page.evaluate("navigator.storage.estimate()")["usage"]
            cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": usage})
            wait_for_device(page, "s.outbox.noStorage >= 2 && s.frames.some(f => f.decision === 'no_storage')")
            full = page.evaluate("window.hgenDevice")
            cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin})  # room again
            wait_for_device(page, f"s.totals.stored > {full['totals']['stored']} && s.error === null")
            recovered = page.evaluate("window.hgenDevice")
            # the camera stops: said so, then started again (the fake camera is there to take)
            page.evaluate("document.getElementById('camera').srcObject.getVideoTracks().forEach(t => t.stop())")
            wait_for_device(page, "s.status === 'camera stopped'")
            stopped = page.evaluate("[window.hgenDevice.status, window.hgenDevice.error, window.hgenDevice.captured]")
            wait_for_device(page, f"s.status === 'streaming' && s.cameraRestarts >= 1 && s.captured > {stopped[2]}")
            page.screenshot(path=str(artifacts_dir / "phone_longrun.png"))
            restarted = page.evaluate("window.hgenDevice")
        finally:
            browser.close()
            manager.stop()
    assert window["error"] is None, (window["error"], log[-10:])
    # a window of the last frames, samples and fused answers; the session's totals
    assert len(window["frames"]) == WINDOW and window["totals"]["frames"] >= 3 * WINDOW
    assert [f["n"] for f in window["frames"]] == list(range(window["frames"][0]["n"], window["frames"][0]["n"] + WINDOW))
    assert len(window["stored"]) <= WINDOW and window["totals"]["stored"] >= 3
    # persistence asked for once, its refusal shown (not an error: the page streams on)
    assert persist_calls == 1 and window["storage"].startswith("not persistent: the browser refused")
    assert shown_storage == window["storage"]
    # a full quota: the stream goes on, the frames keep the model's answer, counted, the error named
    assert full["status"] == "streaming", (full["status"], full["error"])
    assert "QuotaExceededError" in full["error"]
    refused = [f for f in full["frames"] if f["decision"] == "no_storage"]
    assert refused and all(f["sampleId"] is None for f in refused)
    assert full["outbox"]["noStorage"] >= len(refused)
    assert full["outbox"]["samples"] == full["pending"] <= full["outbox"]["maxSamples"]
    assert recovered["status"] == "streaming" and recovered["error"] is None
    # the camera: stopped and said so, then streaming again
    status, error, _ = stopped
    assert status == "camera stopped" and "camera stopped: " in error, stopped
    assert restarted["error"] is None and restarted["camera"] == "streaming", restarted["error"]


def test_a_backlog_is_resent_a_page_at_a_time_and_the_worker_keeps_one_version_per_bundle(
        chromium_required: str, mosquitto_required: str, bundle: PhoneBundle, tmp_path: Path) -> None:
    device = "phone-backlog"
    with mqtt_phone_hub(tmp_path / "hub.db", bundle, BUNDLE, audit_share=0.0, audit_seed=1) as (hub, _):
        hub.pause_crowd()  # nobody answers: samples pile up in the outbox
        manager, browser = launch_chromium(bundle.video, chromium_required)
        try:
            context = browser.new_context()
            context.add_init_script(READS)
            page, log = new_page(context)
            # a phone that ran the earlier page: one sample waiting in its version-1 outbox
            page.goto(phone_link(hub.app, device, BUNDLE))
            legacy = str(uuid.uuid4())
            page.evaluate(LEGACY_OUTBOX, legacy_entry(device, legacy))
            page.click("#join-device-button")
            page.wait_for_url(re.compile(r"/device$"), timeout=10_000)
            wait_for_device(page, "s.connected && s.pending >= 70 || s.error")
            before = page.evaluate("window.hgenDevice")
            page.reload()  # the backlog is resent on connect; the service worker controls the page from here
            wait_for_device(page, "s.connected || s.error")
            page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=30_000)
            hub.resume_crowd()
            stored = [*before["stored"], legacy]
            wait_for_device(page, f"{stored!r}.every(id => s.fused.some(f => f.sampleId === id)) || s.error")
            largest = page.evaluate("window.__largestRead")
            # an older version asked for by name (as a reload does), then a hot swap fetches 0.2.0
            page.evaluate("""async () => { const p = JSON.parse(localStorage.getItem("hgen.device.v1"));
                await fetch("/device/bundle/lenet5-digits/0.1.0",
                  { headers: { Authorization: `Bearer ${p.device_id}:${p.secret}` } }); }""")
            page.evaluate(WATCH_BUNDLES)
            page.wait_for_function(f"() => window.__kept?.includes('/device/bundle/{BUNDLE}/0.1.0')", timeout=30_000)
            hub.publish_bundle(bundle.archive_v2, BUNDLE, "0.2.0", [device])
            wait_for_device(page, "s.swaps.length === 1 && s.swaps[0].atFrame >= 0 || s.error")
            page.wait_for_function(f"() => window.__kept?.includes('/device/bundle/{BUNDLE}/0.2.0')"
                                   f" && !window.__kept.includes('/device/bundle/{BUNDLE}/0.1.0')", timeout=30_000)
            kept = page.evaluate("window.__kept")
            after = page.evaluate("window.hgenDevice")
        finally:
            browser.close()
            manager.stop()
    assert before["error"] is None and after["error"] is None, (before["error"], after["error"], log[-10:])
    # every sample waiting at the reload reached the hub and came back fused, the one of the earlier page's
    # outbox (its database upgraded in place) too
    assert len(stored) >= 70 and set(stored) <= hub.sample_ids()
    assert 0 < largest <= 32, f"one transaction read {largest} stored images"
    # the newest version run (the page tells the worker) is kept, a newer one refused never displaces it
    assert sorted(k for k in kept if k.startswith("/device/bundle/")) == [
        f"/device/bundle/{BUNDLE}", f"/device/bundle/{BUNDLE}/0.2.0"], kept
    assert f"/device/ran/{BUNDLE}" in kept, kept
