"""The familiarity check on a real phone page (headless Chromium, Playwright, MQTT to a real Mosquitto): a bundle
whose manifest carries `familiarity` (the training images' brightness, contrast and detail ranges) makes the page
ask people about a drawn share of the frames unlike the training images even when the model is confident, and the
page decides every frame as the Python agent does: the agent's familiarity check (`unfamiliar_frames`, as
`Agent._gate` calls it) on the very model inputs the page ran, and the agent's `Gate` (same audit and unfamiliar
shares and seed) over the agent's confidences.

The fake camera plays held-out digits, then the same digits with sensor noise: the model stays confident on most
noisy frames (tau is set so confidence alone asks about almost nothing), so only the familiarity check sends them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hgen.hub.testing.phone import (
    PhoneAppMissingError,
    PhoneBundle,
    agent_frames,
    built_app,
    launch_chromium,
    mqtt_phone_hub,
    nearest_frames,
    new_page,
    open_phone_link,
    phone_bundle,
    phone_link,
    wait_for_device,
    write_y4m,
)

BUNDLE = "lenet5-digits"
DEVICE = "phone-familiar"
AUDIT_SHARE, AUDIT_SEED = 0.2, 11  # audits on: an unfamiliar frame takes the unfamiliar draw, not the audit one
UNFAMILIAR_SHARE = 0.5  # some confident unfamiliar frames asked, some not: the draws must stay in step
CLEAN = 30  # held-out digits first, then CLEAN noisy ones
TAU = 0.5  # the model is rarely this unsure on these frames, noisy or not


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> PhoneBundle:
    """The phone bundle with the familiarity ranges of its training images (the first 1200 digits, as the compile
    stores them), and a video of 30 held-out digits followed by 30 noisy ones."""
    from hgen.edge_agent.testing import digits_28
    from hgen.runtime.familiarity import fit_familiarity

    try:
        built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))
    images, _ = digits_28()
    folder = tmp_path_factory.mktemp("phone-familiarity")
    made = phone_bundle(folder, frames=2 * CLEAN, tau=TAU, familiarity=fit_familiarity(images[:1200, ..., None]))
    held = images[1400:1400 + 2 * CLEAN]
    noisy = np.clip(held[CLEAN:] + np.random.default_rng(0).normal(0.0, 0.25, held[CLEAN:].shape), 0.0, 1.0)
    video = write_y4m(folder / "clean_then_noisy.y4m", np.concatenate([held[:CLEAN], noisy]))
    return replace(made, video=video)


@pytest.fixture
def running(tmp_path: Path, bundle: PhoneBundle, mosquitto_required: str) -> Iterator[Any]:
    with mqtt_phone_hub(tmp_path / "hub.db", bundle, BUNDLE, audit_share=AUDIT_SHARE, audit_seed=AUDIT_SEED,
                        unfamiliar_share=UNFAMILIAR_SHARE) as (hub, broker):
        yield hub


def test_phone_asks_people_about_unfamiliar_frames_as_the_agent_decides(
        chromium_required: str, running: Any, bundle: PhoneBundle, artifacts_dir: Path) -> None:
    from hgen.edge_agent.config import GateConfig
    from hgen.edge_agent.gating import Gate
    from hgen.runtime.bundle import load_bundle
    from hgen.runtime.familiarity import unfamiliar_frames

    hub = running
    manager, browser = launch_chromium(bundle.video, chromium_required)
    try:
        page, log = new_page(browser)
        open_phone_link(page, phone_link(hub.app, DEVICE, BUNDLE))
        # provisioned: keep each model input; answer every frame in order however far behind (pacing=all), and keep
        # every frame's record (keep=all: a window by default)
        page.goto(f"{hub.app.web_url}/device?record=inputs&pacing=all&keep=all")
        # the video loops: wait for more than one pass
        wait_for_device(page, f"s.connected && s.totals.frames >= {bundle.frames + CLEAN} || s.error")
        seen = page.evaluate("window.hgenDevice")
        asked = [f["sampleId"] for f in seen["frames"] if f["sampleId"]]
        # people were really asked: every sample reached the hub and its answers came back fused
        wait_for_device(page, f"{asked!r}.every(id => s.fused.some(f => f.sampleId === id)) || s.error")
        page.screenshot(path=str(artifacts_dir / "phone_familiarity.png"))
        after = page.evaluate("window.hgenDevice")
    finally:
        browser.close()
        manager.stop()
    assert seen["error"] is None and after["error"] is None, (seen["error"], after["error"], log)
    assert seen["pacing"] == "all" and seen["dropped"] == 0
    frames = seen["frames"]
    assert [f["captured"] for f in frames] == list(range(1, len(frames) + 1))  # every captured frame, in order
    # the same video frames: each device converts the frame's planes with the same rule, so the page's inputs are
    # the agent's, bit for bit, and the Python side below judges the very inputs the page ran
    reference = agent_frames(bundle.video, bundle.archive, bundle.public_key)
    inputs = np.array([f["input"] for f in frames], np.float32)
    matched, rms = nearest_frames(inputs, reference)
    assert rms.max() == 0.0, f"a phone input differs from the agent's for the same frame (RMS {rms.max():.4f})"
    assert len(set(matched.tolist())) >= bundle.frames * 0.75, "the phone did not see most of the video"
    with load_bundle(bundle.archive, trusted_public_key=bundle.public_key, engines=[]) as loaded:
        manifest = loaded.manifest
    assert manifest.familiarity is not None
    unfamiliar = unfamiliar_frames(manifest.familiarity, inputs.reshape(-1, *reference[0].input.shape))
    # the check itself: the page flags exactly the frames the agent's check flags, and they are the noisy ones
    # (a held-out digit may fall just outside a range by chance: the Python side decides it the same way)
    assert [f["unfamiliar"] for f in frames] == unfamiliar.tolist()
    noisy = matched >= CLEAN
    assert noisy.any() and (~noisy).any()
    assert unfamiliar[noisy].all() and unfamiliar[~noisy].mean() <= 0.1, (unfamiliar[noisy], unfamiliar[~noisy])
    # confidence alone (the page's toPeople, the agent's needs_human) agrees, and would have asked about few of them
    assert [f["toPeople"] for f in frames] == [reference[i].to_people for i in matched]
    confident_unfamiliar = [f for f, u in zip(frames, unfamiliar) if u and not f["toPeople"]]
    assert len(confident_unfamiliar) >= 0.8 * unfamiliar.sum(), "the model was not confident on the noisy frames"
    # the agent's Gate over the agent's confidences and its familiarity verdicts decides every frame as the page
    gate = Gate(GateConfig(audit_share=AUDIT_SHARE, unfamiliar_share=UNFAMILIAR_SHARE, seed=AUDIT_SEED))
    expected = [gate.decide(reference[i].confidence, manifest.tau, 0.0, unfamiliar=bool(u)).value
                for i, u in zip(matched, unfamiliar)]
    assert [f["decision"] for f in frames] == expected
    # so confident unfamiliar frames went to people by their own draw (some did, some not: without the check none
    # would have), familiar confident ones only by the audit draw
    drawn = [f["decision"] for f, u in zip(frames, unfamiliar) if u and not f["toPeople"]]
    assert {"escalate", "confident"} <= set(drawn) and "audit" not in drawn
    assert all(f["sampleId"] for f in frames if f["decision"] == "escalate")
    assert {"confident", "audit"} <= {f["decision"] for f, u in zip(frames, unfamiliar) if not u}
    assert set(asked) <= hub.sample_ids()
