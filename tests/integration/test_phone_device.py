"""A phone in device mode, for real in Debian's headless Chromium (Playwright): onboarded by the operator's
single-use link, it downloads the signed bundle from the hub, verifies it with WebCrypto, runs the web model with
onnxruntime-web (wasm, one thread) on its camera, and decides as the Python agent does on the same frames.

The camera is Chromium's fake capture device playing a `.y4m` (C420) file made from held-out digits: a camera
cannot run here, and the file goes through the same getUserMedia path. The Python reference reads the same file
through OpenCV and the agent's `load_model` (LiteRT).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hgen.hub.app import HubApp
from hgen.hub.kb.store import BundleRecord
from hgen.hub.testing.phone import PhoneAppMissingError, agent_frames, built_app, nearest_frames, write_y4m
from hgen.hub.testing.web import add_people, logged_in, web_hub

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
FRAMES = 60
BUNDLE = "lenet5-digits"


@pytest.fixture(scope="module")
def phone_app() -> Path:
    try:
        return built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A briefly trained LeNet-5 on digits in a signed bundle with its web model, and the held-out video."""
    from hgen.compiler.testing import litert_bundle, train_lenet
    from hgen.edge_agent.testing import digits_28, make_keys

    folder = tmp_path_factory.mktemp("phone")
    keys = make_keys(folder / "keys")
    archive = litert_bundle(folder / "bundle", train_lenet(), keys, tau=0.9)
    images, _ = digits_28()
    video = write_y4m(folder / "held_out.y4m", images[1400:1400 + FRAMES])
    return {"archive": archive, "public_key": keys.public_pem, "video": video, "folder": folder}


@pytest.fixture
def hub(tmp_path: Path, bundle: dict[str, Path]) -> Iterator[HubApp]:
    with web_hub(tmp_path, phones={"public_key": str(bundle["public_key"])}) as app:
        add_people(app)
        publish(app, bundle["archive"], "0.1.0")
        yield app


def publish(app: HubApp, archive: Path, version: str, when: float = 1.0) -> None:
    from hgen.compiler.bundle import sha256_file

    app.service.kb.add_bundle(BundleRecord(BUNDLE, version, sha256_file(archive), archive.stat().st_size, b"",
                                           str(archive), when))


def phone_link(app: HubApp, device_id: str) -> str:
    from hgen.hub.testing.web import csrf_token_of

    client = logged_in(app, "op")
    token = csrf_token_of(client.get("/operator").get_data(as_text=True))
    page = client.post("/operator/phones", data={"device_id": device_id, "bundle_name": BUNDLE, "csrf_token": token})
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    found = re.search(r'id="phone-link" href="([^"]+)"', page.get_data(as_text=True))
    assert found is not None
    path = found.group(1).split("/device/join/", 1)[1]  # the test client's host is not the server's
    return f"{app.web_url}/device/join/{path}"


def launch(video: Path) -> Any:
    from playwright.sync_api import sync_playwright

    manager = sync_playwright().start()
    browser = manager.chromium.launch(executable_path="/usr/bin/chromium",
                                      args=[*ARGS, f"--use-file-for-fake-video-capture={video}"])
    return manager, browser


def new_page(browser: Any) -> tuple[Any, list[str]]:
    """A page whose script errors and console messages are kept, so a failure says what the page saw."""
    page, log = browser.new_page(), []
    page.on("pageerror", lambda error: log.append(f"pageerror: {error}"))
    page.on("console", lambda message: log.append(f"console {message.type}: {message.text}"))
    return page, log


def state(page: Any) -> dict[str, Any]:
    return page.evaluate("window.hgenDevice")


@pytest.mark.usefixtures("phone_app")
def test_phone_decides_as_the_agent_on_the_same_frames(chromium_required: str, hub: HubApp,
                                                       bundle: dict[str, Path], artifacts_dir: Path) -> None:
    link = phone_link(hub, "phone-1")
    manager, browser = launch(bundle["video"])
    try:
        page, log = new_page(browser)
        page.goto(link)
        page.wait_for_url(re.compile(r"/device$"), timeout=10_000)
        page.goto(f"{hub.web_url}/device?record=inputs")  # provisioned: device mode, keeping each model input
        page.wait_for_function(f"() => window.hgenDevice && (window.hgenDevice.frames.length >= {2 * FRAMES}"
                               " || window.hgenDevice.error)", timeout=120_000)
        page.screenshot(path=str(artifacts_dir / "phone_device.png"))
        seen = page.evaluate("window.hgenDevice")
    except Exception:
        print("\n".join(log))
        raise
    finally:
        browser.close()
        manager.stop()
    assert seen["error"] is None and seen["status"] == "streaming", (seen["error"], log)
    assert seen["dropped"] == 0
    reference = agent_frames(bundle["video"], bundle["archive"], bundle["public_key"])
    assert len(reference) == FRAMES
    inputs = np.array([frame["input"] for frame in seen["frames"]], np.float32)
    matched, rms = nearest_frames(inputs, reference)
    assert rms.max() < 0.02, f"a phone frame matches no video frame (RMS {rms.max():.4f})"
    assert len(set(matched.tolist())) >= FRAMES * 0.9, "the phone did not see most of the video"
    top1 = np.mean([f["top1"] == reference[i].top1 for f, i in zip(seen["frames"], matched)])
    gate = np.mean([f["toPeople"] == reference[i].to_people for f, i in zip(seen["frames"], matched)])
    assert top1 >= 0.99 and gate >= 0.99, (top1, gate)
    assert 0 < sum(f["toPeople"] for f in seen["frames"]) < len(seen["frames"]), "the gate never or always fires"


def tampered(archive: Path, out: Path) -> Path:
    """The same archive with one byte of the web model flipped: the manifest and signature are untouched."""
    import gzip
    import io

    raw = bytearray(gzip.decompress(archive.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        member = tar.getmember("model.web.onnx")
    raw[member.offset_data + member.size // 2] ^= 0xFF
    out.write_bytes(gzip.compress(bytes(raw)))
    return out


@pytest.mark.usefixtures("phone_app")
def test_phone_refuses_a_tampered_bundle(chromium_required: str, hub: HubApp, bundle: dict[str, Path]) -> None:
    publish(hub, tampered(bundle["archive"], bundle["folder"] / "tampered.hgb"), "0.1.1", when=2.0)
    manager, browser = launch(bundle["video"])
    try:
        page, log = new_page(browser)
        page.goto(phone_link(hub, "phone-2"))
        page.wait_for_function("() => window.hgenDevice && window.hgenDevice.status === 'bundle refused'",
                               timeout=60_000)
        seen = state(page)
        shown = page.text_content("#error")
    finally:
        browser.close()
        manager.stop()
    assert "model.web.onnx" in seen["error"] and "modified" in seen["error"]
    assert shown == seen["error"] and seen["frames"] == []
