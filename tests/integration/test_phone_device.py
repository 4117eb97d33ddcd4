"""A phone in device mode, for real in Debian's headless Chromium (Playwright): onboarded by the operator's
single-use link, it downloads the signed bundle from the hub, verifies it with WebCrypto, runs the web model with
onnxruntime-web (wasm, one thread) on its camera, and decides as the Python agent does on the same frames.

The camera is Chromium's fake capture device playing a `.y4m` (C420) file made from held-out digits: a camera
cannot run here, and the file goes through the same getUserMedia path. The page reads each frame's own YUV planes
(WebCodecs) and converts them with `hgen.runtime.yuv`'s integer rule; the Python reference reads the same file's
planes through the agent's `y4m` source (the same rule) and the agent's `load_model` (LiteRT), so both devices
feed their models the same pixels.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hgen.hub.app import HubApp
from hgen.hub.kb.store import BundleRecord
from hgen.hub.testing.phone import (
    PhoneAppMissingError,
    PhoneBundle,
    agent_frames,
    built_app,
    launch_chromium,
    nearest_frames,
    new_page,
    open_phone_link,
    phone_bundle,
    phone_link,
    phone_link_in_browser,
    wait_for_device,
)
from hgen.hub.testing.web import PASSWORD, add_people, web_hub

BUNDLE = "lenet5-digits"


@pytest.fixture(scope="module")
def phone_app() -> Path:
    try:
        return built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> PhoneBundle:
    return phone_bundle(tmp_path_factory.mktemp("phone"))


@pytest.fixture
def hub(tmp_path: Path, bundle: PhoneBundle) -> Iterator[HubApp]:
    with web_hub(tmp_path, phones={"public_key": str(bundle.public_key)}) as app:
        add_people(app)
        publish(app, bundle.archive, "0.1.0")
        yield app


def publish(app: HubApp, archive: Path, version: str, when: float = 1.0, name: str = BUNDLE) -> None:
    from hgen.compiler.bundle import sha256_file

    app.service.kb.add_bundle(BundleRecord(name, version, sha256_file(archive), archive.stat().st_size, b"",
                                           str(archive), when))


@pytest.mark.usefixtures("phone_app")
@pytest.mark.parametrize("engine", ["onnxruntime-web", "litert-js"])
def test_phone_decides_as_the_agent_on_the_same_frames(chromium_required: str, hub: HubApp, bundle: PhoneBundle,
                                                       artifacts_dir: Path, engine: str) -> None:
    manager, browser = launch_chromium(bundle.video, chromium_required)
    try:
        operator, _ = new_page(browser.new_context())
        link, qr = phone_link_in_browser(operator, hub.web_url, "phone-1", BUNDLE, PASSWORD)
        operator.screenshot(path=str(artifacts_dir / "phone_link.png"))
        assert link.startswith(f"{hub.web_url}/device/join/") and qr.count("<path") + qr.count("<rect") >= 1
        page, log = new_page(browser.new_context())
        open_phone_link(page, link)
        # provisioned: keep each model input; answer every frame in order however far behind (pacing=all), so
        # what follows holds on a loaded machine too; keep every frame's record (keep=all: a window by default)
        page.goto(f"{hub.web_url}/device?record=inputs&engine={engine}&pacing=all&keep=all")
        page.wait_for_function(f"() => window.hgenDevice && (window.hgenDevice.totals.frames >= {2 * bundle.frames}"
                               " || window.hgenDevice.error)", timeout=120_000)
        captured = page.evaluate("window.hgenDevice.captured")  # every frame captured so far gets its answer
        page.wait_for_function(f"() => window.hgenDevice.totals.frames >= {captured} || window.hgenDevice.error",
                               timeout=120_000)
        page.screenshot(path=str(artifacts_dir / f"phone_device_{engine}.png"))
        seen = page.evaluate("window.hgenDevice")
    finally:
        browser.close()
        manager.stop()
    assert seen["error"] is None and seen["status"] == "streaming", (seen["error"], log)
    assert page_engine(seen) == engine and seen["pacing"] == "all" and seen["dropped"] == 0
    assert [f["captured"] for f in seen["frames"]] == list(range(1, len(seen["frames"]) + 1))  # all, in order
    assert len(seen["frames"]) >= captured
    assert set(seen["capture"]) == {"planes I420 bt601 limited"}, seen["capture"]  # not the browser's decoder
    reference = agent_frames(bundle.video, bundle.archive, bundle.public_key)
    assert len(reference) == bundle.frames
    inputs = np.array([frame["input"] for frame in seen["frames"]], np.float32)
    matched, rms = nearest_frames(inputs, reference)
    assert rms.max() == 0.0, f"a phone input differs from the agent's for the same frame (RMS {rms.max():.4f})"
    assert len(set(matched.tolist())) >= bundle.frames * 0.75, "the phone did not see most of the video"
    top1 = np.mean([f["top1"] == reference[i].top1 for f, i in zip(seen["frames"], matched)])
    gate = np.mean([f["toPeople"] == reference[i].to_people for f, i in zip(seen["frames"], matched)])
    assert top1 >= 0.99 and gate >= 0.99, (top1, gate)
    assert 0 < sum(f["toPeople"] for f in seen["frames"]) < len(seen["frames"]), "the gate never or always fires"


@pytest.mark.usefixtures("phone_app")
def test_litert_js_runs_an_int8_bundle_with_uint8_io_as_the_agents_litert_int8(
        chromium_required: str, tmp_path: Path) -> None:
    """The bundle's int8 model on the agent (LiteRT, int8 I/O) and its uint8-I/O twin in LiteRT.js, the page
    quantising the input and dequantising the logits with the manifest's parameters: same frames, same answers."""
    int8 = phone_bundle(tmp_path / "int8", frames=40, quantize="int8")
    with web_hub(tmp_path / "hub", phones={"public_key": str(int8.public_key)}) as app:
        add_people(app)
        publish(app, int8.archive, "0.1.0")
        manager, browser = launch_chromium(int8.video, chromium_required)
        try:
            page, log = new_page(browser)
            open_phone_link(page, phone_link(app, "phone-int8", BUNDLE))
            page.goto(f"{app.web_url}/device?record=inputs&engine=litert-js&keep=all")
            page.wait_for_function(f"() => window.hgenDevice && (window.hgenDevice.totals.frames >= {int8.frames}"
                                   " || window.hgenDevice.error)", timeout=120_000)
            seen = page.evaluate("window.hgenDevice")
        finally:
            browser.close()
            manager.stop()
    assert seen["error"] is None and page_engine(seen) == "litert-js", (seen["error"], log)
    # the engine path itself: the agent's LiteRT int8 on the very inputs the page made gives the same integers,
    # so the same answers and the same confidences
    phone_inputs = np.array([f["input"] for f in seen["frames"]], np.float32)
    agent = agent_answers(int8, phone_inputs.reshape(-1, 28, 28, 1))
    assert [f["top1"] for f in seen["frames"]] == [top1 for top1, _ in agent]
    assert max(abs(f["confidence"] - c) for f, (_, c) in zip(seen["frames"], agent)) <= 1e-5
    assert len({round(c, 4) for _, c in agent}) > 5  # real answers, not one constant
    # the same video frames, each device converting the frame's planes with the same rule: the same inputs, so
    # the same answers and gate decisions frame by frame
    reference = agent_frames(int8.video, int8.archive, int8.public_key)
    matched, rms = nearest_frames(phone_inputs, reference)
    assert rms.max() == 0.0
    pairs = [(f, reference[i]) for f, i in zip(seen["frames"], matched)]
    assert all(f["top1"] == r.top1 and f["toPeople"] == r.to_people for f, r in pairs)


def agent_answers(bundle: PhoneBundle, inputs: np.ndarray) -> list[tuple[int, float]]:
    """The Python agent's model (LiteRT, the bundle's int8 engine file) on given model inputs: (top-1, confidence)."""
    from hgen.edge_agent.config import BundleConfig
    from hgen.edge_agent.model import load_model

    model = load_model(bundle.archive, BundleConfig(path=bundle.archive, public_key=bundle.public_key))
    try:
        answers = []
        for x in inputs:
            logits = model.infer(x[None])
            answers.append((int(logits.argmax()), float(model.confidence(logits))))
        return answers
    finally:
        model.close()


def page_engine(seen: dict[str, object]) -> str:
    return str(seen["engine"])


def tampered(archive: Path, out: Path) -> Path:
    """The same archive with one byte of the web model flipped: the manifest and signature are untouched."""
    raw = bytearray(gzip.decompress(archive.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.getmember("model.web.onnx")
    raw[member.offset_data + member.size // 2] ^= 0xFF
    out.write_bytes(gzip.compress(bytes(raw)))
    return out


@pytest.mark.usefixtures("phone_app")
def test_phone_refuses_a_tampered_bundle_and_a_used_link(chromium_required: str, hub: HubApp, bundle: PhoneBundle) -> None:
    publish(hub, tampered(bundle.archive, bundle.folder / "tampered.hgb"), "0.1.1", when=2.0)
    manager, browser = launch_chromium(bundle.video, chromium_required)
    try:
        page, log = new_page(browser)
        link = phone_link(hub, "phone-2", BUNDLE)
        open_phone_link(page, link)
        page.wait_for_function("() => window.hgenDevice && window.hgenDevice.status === 'bundle refused'",
                               timeout=60_000)
        seen = page.evaluate("window.hgenDevice")
        shown = page.text_content("#error")
        used_again = page.goto(link)  # single use: the provisioning is handed out once
    finally:
        browser.close()
        manager.stop()
    assert "model.web.onnx" in seen["error"] and "modified" in seen["error"], log
    assert shown == seen["error"] and seen["frames"] == []
    assert used_again is not None and used_again.status == 400


@pytest.mark.usefixtures("phone_app")
def test_phone_takes_a_hub_upgrade_starts_offline_and_runs_only_its_model_never_older(
        chromium_required: str, hub: HubApp, bundle: PhoneBundle, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The service worker asks the network first (a hub upgrade's page script runs at the next open; it once kept
    the first device.js for ever), an unchanged file conditionally (the hub answers 304: the wasm is not downloaded
    again, nor the bundle), and its cache when the hub is unreachable (the page, its wasm and the bundle: the app starts offline).
    On load the bundle must be the provisioned model and not older than the newest version this phone ran
    (localStorage); the page says why it refuses one."""
    import hgen.hub.web.routes_device as routes_device
    from hgen.hub.web.phones import device_app

    served = tmp_path / "device_app"  # the installed app, which the "upgrade" rewrites
    shutil.copytree(device_app(), served)
    monkeypatch.setattr(routes_device, "device_app", lambda: served)
    answered: list[tuple[str, int]] = []  # the hub's answers for the page's files: (name, HTTP status)
    send_file = routes_device.send_file

    def counted(path: object, *args: object, **kwargs: object) -> object:
        response = send_file(path, *args, **kwargs)
        name = path.name if isinstance(path, Path) else str(kwargs.get("download_name", ""))  # a bundle: a file object
        answered.append((name, response.status_code))
        return response

    monkeypatch.setattr(routes_device, "send_file", counted)
    publish(hub, bundle.archive, "0.1.0", name="other-bundle")  # lenet5-digits' archive under another bundle name
    script = served / "device.js"
    streaming = "s.status === 'streaming' || s.error"
    manager, browser = launch_chromium(bundle.video, chromium_required)
    try:
        context = browser.new_context()
        page, log = new_page(context)
        open_phone_link(page, phone_link(hub, "phone-3", BUNDLE))
        wait_for_device(page, streaming)
        page.reload()  # the worker controls the page from its second open (claim() does not take the first here)
        wait_for_device(page, streaming)
        page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=30_000)
        script.write_text("window.hgenBuild = 'upgraded';\n" + script.read_text())  # the hub is upgraded
        answered.clear()
        page.reload()
        wait_for_device(page, streaming)
        upgrade_answers = list(answered)
        upgraded = page.evaluate("[window.hgenBuild ?? null, window.hgenDevice.status, window.hgenDevice.error]")
        script.write_text("window.hgenBuild = 'unreachable';\n" + script.read_text())
        context.set_offline(True)  # the hub is unreachable: the last page, script, wasm and bundle from the cache
        page.reload()
        wait_for_device(page, "s.totals.frames > 3 || s.error")
        offline = page.evaluate("[window.hgenBuild ?? null, window.hgenDevice.status, window.hgenDevice.version, "
                                "window.hgenDevice.error]")
        context.set_offline(False)
        remembered = page.evaluate("localStorage.getItem('hgen.device.highest.v1')")
        # the phone ran 0.5.0 (say, hot-swapped to it); the hub answers 0.1.0 and has no 0.5.0: refused
        page.evaluate("localStorage.setItem('hgen.device.highest.v1', JSON.stringify({'lenet5-digits': '0.5.0'}))")
        page.reload()
        wait_for_device(page, "s.status !== 'starting' && s.status !== 'verifying bundle'")
        older = page.evaluate("[window.hgenDevice.status, window.hgenDevice.error, document.getElementById('error')"
                              ".textContent, window.hgenDevice.totals.frames]")
        # provisioned for other-bundle, the hub answers with another model signed with the same key: refused
        other, other_log = new_page(browser.new_context(service_workers="block"))
        open_phone_link(other, phone_link(hub, "phone-4", "other-bundle"))
        wait_for_device(other, "s.status !== 'starting' && s.status !== 'verifying bundle'")
        renamed = other.evaluate("[window.hgenDevice.status, window.hgenDevice.error, window.hgenDevice.totals.frames]")
    finally:
        browser.close()
        manager.stop()
    assert upgraded == ["upgraded", "streaming", None], (upgraded, log)
    assert ("device.js", 200) in upgrade_answers and ("ort-wasm-simd-threaded.wasm", 304) in upgrade_answers
    assert ("ort-wasm-simd-threaded.wasm", 200) not in upgrade_answers, upgrade_answers
    assert (f"{BUNDLE}-0.1.0.hgb", 304) in upgrade_answers, upgrade_answers  # the kept bundle: not downloaded again
    assert (f"{BUNDLE}-0.1.0.hgb", 200) not in upgrade_answers, upgrade_answers
    assert offline == ["upgraded", "streaming", "0.1.0", None], (offline, log)
    assert json.loads(remembered) == {BUNDLE: "0.1.0"}
    status, error, shown, frames = older
    assert status == "bundle refused" and frames == 0, (older, log)
    assert "lenet5-digits 0.1.0, older than 0.5.0 this phone already ran" in error and shown == error
    status, error, frames = renamed
    assert status == "bundle refused" and frames == 0, (renamed, other_log)
    assert "signed as lenet5-digits 0.1.0" in error and "runs other-bundle" in error
