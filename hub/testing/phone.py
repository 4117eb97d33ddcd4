"""The phone app (`android_bridge/`) for tests and benchmarks: where its build is, and a typed error when it is not.

`make test` runs `npm ci` and `npm run build` before the tests (no network at test time); a test that finds no
build skips naming that command (and fails under CI=true, as every missing prerequisite does).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from hgen.hub.web.phones import BUILD_COMMAND, PhoneAppMissingError, device_app

if TYPE_CHECKING:
    from hgen.runtime.familiarity import Familiarity

APP_DIR = Path(__file__).resolve().parents[2] / "android_bridge"  # the source checkout's app (tests run there)
DIST = APP_DIR / "dist"


def built_app() -> Path:
    """The build directory of the node tests (`dist/test`), once the page's files are built into the hub."""
    device_app()
    if not (DIST / "test").is_dir():
        raise PhoneAppMissingError(f"android_bridge's node tests are not built: run {BUILD_COMMAND}")
    return DIST


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        raise PhoneAppMissingError("node is not installed: apt-get install nodejs npm")
    return found


def write_y4m(path: Path, images: np.ndarray, *, scale: int = 2, fps: int = 30) -> Path:
    """Grey images in [0, 1] (N, H, W[, 1]) as a YUV 4:2:0 `.y4m` (C420) for Chromium's fake camera, each image
    enlarged `scale` times by pixel repetition; luma in video range (16..235), chroma neutral."""
    frames = np.asarray(images).reshape(len(images), images.shape[1], images.shape[2])
    frames = np.kron(frames, np.ones((scale, scale)))
    height, width = frames.shape[1:]
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 needs even sizes, got {width}x{height}")
    chroma = np.full(2 * (height // 2) * (width // 2), 128, np.uint8).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(np.round(16 + np.clip(frame, 0, 1) * 219).astype(np.uint8).tobytes())
            out.write(chroma)
    return path


@dataclass(frozen=True)
class AgentFrame:
    """What the Python agent's model makes of one frame of the video (the reference the phone is held to)."""

    index: int
    input: np.ndarray
    top1: int
    confidence: float
    to_people: bool


def agent_frames(video: Path, bundle: Path, public_key: Path) -> list[AgentFrame]:
    """Every frame of the `.y4m` through the agent's `y4m` source (its planes by `hgen.runtime.yuv`'s rule, as the
    page converts its camera's planes) and the agent's `load_model` (LiteRT): preprocessing, model, gate."""
    from hgen.edge_agent.config import BundleConfig, SourceConfig
    from hgen.edge_agent.model import load_model, preprocess
    from hgen.edge_agent.sources import open_source
    from hgen.runtime.hdnn import needs_human

    model = load_model(bundle, BundleConfig(path=bundle, public_key=public_key))
    source, frames = open_source(SourceConfig(kind="y4m", uri=str(video), prefetch=0)), []
    try:
        while (frame := source.read()) is not None:
            inputs, _ = preprocess(frame.image, model.manifest.input)
            logits = model.infer(inputs[None])
            confidence = model.confidence(logits)
            frames.append(AgentFrame(len(frames), inputs, int(logits.argmax()), confidence,
                                     bool(needs_human(np.float64(confidence), model.tau))))
        return frames
    finally:
        source.close()
        model.close()


def input_signature(inputs: np.ndarray) -> np.ndarray:
    """What the page keeps of a model input (H, W, C) with `?record=inputs` (android_bridge/src/device.ts): all of
    a small input; of a large one, the 16x16 block means of its first channel."""
    height, width, _ = inputs.shape
    if inputs.size <= 4096 or height % 16 or width % 16:
        return inputs.reshape(-1)
    first = inputs[..., 0].astype(np.float64)
    return first.reshape(16, height // 16, 16, width // 16).mean(axis=(1, 3)).reshape(-1)


def nearest_frames(phone_inputs: np.ndarray, agent: list[AgentFrame]) -> tuple[np.ndarray, np.ndarray]:
    """For each input the phone ran, the agent frame of the same image (smallest RMS difference) and that RMS:
    the fake camera loops the file at its own pace, so the phone's frame numbers say nothing."""
    reference = np.stack([input_signature(frame.input) for frame in agent])
    distance = np.sqrt(((phone_inputs[:, None, :] - reference[None]) ** 2).mean(axis=2))
    best = distance.argmin(axis=1)
    return best, distance[np.arange(len(best)), best]


@dataclass(frozen=True)
class PhoneBundle:
    """Signed bundles (0.1.0, and 0.2.0 of the same weights for hot swaps) with web models, their key, and a
    held-out video for the fake camera."""

    archive: Path
    archive_v2: Path
    public_key: Path
    private_key: Path
    video: Path
    folder: Path
    frames: int


def phone_bundle(folder: Path, frames: int = 60, tau: float = 0.9, quantize: str = "float",
                 familiarity: Familiarity | None = None) -> PhoneBundle:
    """LeNet-5 trained briefly on the first 1200 digits, bundled with both web models (ONNX for onnxruntime-web,
    .tflite for LiteRT.js: float, or for `quantize="int8"` the int8 model with uint8 I/O, and then no 0.2.0);
    frames 1400.. are held out. `familiarity`: the manifest's ranges (`hgen.runtime.familiarity`), none by default
    (no familiarity check)."""
    from hgen.compiler.testing import train_lenet
    from hgen.edge_agent.testing import digits_28, make_keys

    keys = make_keys(folder / "keys")
    model = train_lenet()
    archive = _bundle(folder / "bundle", model, keys.private_pem, "0.1.0", tau, quantize, familiarity)
    archive_v2 = (_bundle(folder / "bundle-v2", model, keys.private_pem, "0.2.0", tau, familiarity=familiarity)
                  if quantize == "float" else archive)
    images, _ = digits_28()
    video = write_y4m(folder / "held_out.y4m", images[1400:1400 + frames])
    return PhoneBundle(archive, archive_v2, keys.public_pem, keys.private_pem, video, folder, frames)


def _bundle(out: Path, model: Any, private_key: Path, version: str, tau: float, quantize: str = "float",
            familiarity: Familiarity | None = None) -> Path:
    """As `hgen.compiler.testing.litert_bundle` writes them, with both browser models."""
    from hgen.compiler.bundle import pack_bundle, write_bundle
    from hgen.edge_agent.testing import LABELS, digits_28

    images, _ = digits_28(300)
    write_bundle(out, model, name="lenet5-digits", version=version, kind="cnn", target="x86_64", labels=LABELS,
                 input_spec={"scale": 1 / 255, "offset": 0.0}, tau=tau, temperature=1.0, fusion_lambda=0.4,
                 confidence_params={"m": 3.0, "difficulty_coef_0": -1.0, "difficulty_coef_1": 1.0,
                                    "difficulty_coef_2": -1.0, "difficulty_intercept": -1.0},
                 representative_data=images[..., None], engines=("litert",), web=("onnxruntime-web", "litert-js"),
                 quantize=quantize, familiarity=familiarity, signing_key=private_key, overwrite=True)
    return pack_bundle(out)


def launch_chromium(video: Path, executable: str = "/usr/bin/chromium") -> tuple[Any, Any]:
    """Playwright's Chromium (Debian's binary) with the fake camera playing `video`; returns (playwright, browser)."""
    from playwright.sync_api import sync_playwright

    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(executable_path=executable, args=[
            *CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"])
    except BaseException:
        manager.stop()
        raise
    return manager, browser


CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")


def new_page(browser: Any) -> tuple[Any, list[str]]:
    """A page (of a browser or a context) whose script errors and console messages are kept, so a failure says
    what the page saw."""
    page, log = browser.new_page(), []
    page.on("pageerror", lambda error: log.append(f"pageerror: {error}"))
    page.on("console", lambda message: log.append(f"console {message.type}: {message.text}"))
    return page, log


def phone_link(app: Any, device_id: str, bundle_name: str) -> str:
    """The operator's single-use link for a new phone, made through the operator page (pointed at the server)."""
    import re

    from hgen.hub.testing.web import csrf_token_of, logged_in

    client = logged_in(app, "op")
    token = csrf_token_of(client.get("/operator").get_data(as_text=True))
    page = client.post("/operator/phones", data={"device_id": device_id, "bundle_name": bundle_name,
                                                 "csrf_token": token})
    if page.status_code != 200:
        raise AssertionError(page.get_data(as_text=True)[:500])
    found = re.search(r'id="phone-link" href="[^"]*/device/join/([^"]+)"', page.get_data(as_text=True))
    if found is None:
        raise AssertionError("no phone link on the page")
    return f"{app.web_url}/device/join/{found.group(1)}"  # the test client's host is not the server's


def open_phone_link(page: Any, link: str) -> None:
    """What the person does on the phone: open the single-use link (the GET only shows a button, so a link preview
    spends nothing) and press the button, whose POST hands the phone its provisioning; device mode opens at /device."""
    import re

    page.goto(link)
    page.click("#join-device-button")
    page.wait_for_url(re.compile(r"/device$"), timeout=10_000)


def phone_link_in_browser(page: Any, base: str, device_id: str, bundle_name: str, password: str) -> tuple[str, str]:
    """The operator's path in a real browser: log in, fill the phone form, get the page with the link and its QR
    code; returns (link, the QR code's SVG markup)."""
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "op")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#who")
    page.goto(f"{base}/operator")
    page.fill("#phone-form input[name=device_id]", device_id)
    page.fill("#phone-form input[name=bundle_name]", bundle_name)
    page.click("#phone-form button[type=submit]")
    page.wait_for_selector("#qr svg")
    return page.get_attribute("#phone-link", "href"), page.inner_html("#qr")


def wait_for_device(page: Any, condition: str, timeout_s: float = 90) -> None:
    """Until the page's device state (`window.hgenDevice` as `s`) meets a JavaScript `condition`."""
    page.wait_for_function(f"() => {{ const s = window.hgenDevice; return s && ({condition}); }}",
                           timeout=timeout_s * 1000)


@contextmanager
def mqtt_phone_hub(db: Path, bundle: PhoneBundle, bundle_name: str, *, audit_share: float,
                   audit_seed: int, unfamiliar_share: float | None = None) -> Iterator[tuple[Any, Any]]:
    """A hub with its web app and phone settings, a real Mosquitto with websockets, people to answer, and the
    bundle published as 0.1.0: (hub, broker), both stopped on exit."""
    import secrets

    from hgen.edge_agent.testing import start_hub
    from hgen.hub.testing.services import mosquitto
    from hgen.hub.testing.web import add_people

    with mosquitto(websockets=True) as broker:
        hub = start_hub(db, [], broker=broker, overrides={
            "web": {"enabled": True, "port": 0, "secret_key": secrets.token_urlsafe(32)},
            "phones": {"public_key": str(bundle.public_key), "mqtt_websocket_url": broker.ws_url,
                       "audit_share": audit_share, "audit_seed": audit_seed}
            | ({} if unfamiliar_share is None else {"unfamiliar_share": unfamiliar_share})})
        try:
            add_people(hub.app)
            hub.publish_bundle(bundle.archive, bundle_name, "0.1.0")
            yield hub, broker
        finally:
            hub.stop()
