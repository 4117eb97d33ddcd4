"""A phone is a device like any other over MQTT: from headless Chromium (Playwright, the fake camera playing a
held-out `.y4m`) it sends uncertain frames over MQTT 5 WebSockets to a real Mosquitto (authenticated with the
credentials its onboarding link gave it) with the same protobuf messages; the SIMULATED crowd answers through the
hub and the phone fuses the answers as the Python runtime does. It also audits confident frames as the agent does
(the same seeded draw: the agent's Gate replayed over the phone's frames decides the same), and audited samples are
answered and fused like the rest. A reload mid-stream loses no sample (IndexedDB outbox) and a hot swap to a new
version announced on its updates topic drops no frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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
DEVICE = "phone-7"
AUDIT_SHARE, AUDIT_SEED = 0.2, 11  # high, so a short run audits several frames
# The page's outbox (IndexedDB) and its pending count, read in one evaluation.
OUTBOX = """new Promise(done => { const open = indexedDB.open("hgen-device"); open.onsuccess = () => {
  const all = open.result.transaction("outbox").objectStore("outbox").getAll();
  all.onsuccess = () => done({ pending: window.hgenDevice.pending, entries: all.result.map(e => ({ version: e.version,
    temperature: e.temperature, fusionLambda: e.fusionLambda, labels: e.labels, m: e.m })) }); }; })"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> PhoneBundle:
    try:
        built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))
    return phone_bundle(tmp_path_factory.mktemp("phone-mqtt"))


@pytest.fixture
def running(tmp_path: Path, bundle: PhoneBundle, mosquitto_required: str) -> Iterator[tuple[Any, Any]]:
    with mqtt_phone_hub(tmp_path / "hub.db", bundle, BUNDLE, audit_share=AUDIT_SHARE,
                        audit_seed=AUDIT_SEED) as (hub, broker):
        yield hub, broker


def agent_decisions(frames: list[dict[str, Any]]) -> list[str]:
    """The agent's Gate (same share and seed, no rate limit) over one page session's frames, in their order."""
    from hgen.edge_agent.config import GateConfig
    from hgen.edge_agent.gating import Gate

    gate = Gate(GateConfig(audit_share=AUDIT_SHARE, seed=AUDIT_SEED))
    return [gate.decide(0.0 if frame["toPeople"] else 1.0, 0.5, 0.0).value for frame in frames]


def test_phone_sends_over_mqtt_fuses_answers_survives_reload_and_hot_swaps(
        chromium_required: str, running: tuple[Any, Any], bundle: PhoneBundle, artifacts_dir: Path) -> None:
    from hgen.runtime.bundle import load_bundle
    from hgen.runtime.hdnn import FusionParams, get_kind

    hub, _ = running
    hub.pause_crowd()  # nobody answers yet: samples wait in the phone's outbox across the reload
    manager, browser = launch_chromium(bundle.video, chromium_required)
    try:
        page, log = new_page(browser)
        open_phone_link(page, phone_link(hub.app, DEVICE, BUNDLE))
        # every frame answered in order, however far behind; every frame's record kept (a window by default)
        page.goto(f"{hub.app.web_url}/device?pacing=all&keep=all")
        wait_for_device(page, "s.connected && s.totals.stored >= 5 || s.error")
        before = page.evaluate("window.hgenDevice")
        assert before["error"] is None, (before["error"], log)
        page.reload()  # mid-stream: stored, unanswered samples must survive in IndexedDB
        wait_for_device(page, "s.connected && s.pending >= 5 || s.error")
        hub.resume_crowd()
        stored = before["stored"]
        wait_for_device(page, f"{stored!r}.every(id => s.fused.some(f => f.sampleId === id)) || s.error")
        hub.publish_bundle(bundle.archive_v2, BUNDLE, "0.2.0", [DEVICE])  # retained notice on the phone's updates
        wait_for_device(page, "s.swaps.length === 1 && s.swaps[0].atFrame >= 0"
                        " && s.totals.frames >= s.swaps[0].atFrame + 30 || s.error")
        page.screenshot(path=str(artifacts_dir / "phone_mqtt.png"))
        after = page.evaluate("window.hgenDevice")
        outbox = page.evaluate(OUTBOX)
    finally:
        browser.close()
        manager.stop()
    assert after["error"] is None, (after["error"], log)
    # every sample stored before the reload reached the hub once and came back fused after it
    assert set(stored) <= hub.sample_ids()
    assert hub.hub_counts()[2] == 0, "a sample got two different replies"
    # the phone fuses as the Python runtime does (the SIMULATED crowd names the model's runner-up)
    with load_bundle(bundle.archive, trusted_public_key=bundle.public_key, engines=[]) as loaded:
        params = FusionParams(loaded.manifest.temperature, loaded.manifest.fusion_lambda)
        labels = list(loaded.manifest.labels)
    # each sample fused once; the count of samples waiting is the outbox's; each one waiting keeps the fusion
    # parameters and classes of the model that made it (a reply after a swap or a reload is fused with them)
    assert len({f["sampleId"] for f in after["fused"]}) == len(after["fused"])
    assert outbox["pending"] == len(outbox["entries"])
    assert all(e["version"] in ("0.1.0", "0.2.0") and (e["temperature"], e["fusionLambda"], e["labels"], e["m"])
               == (params.temperature, params.fusion_lambda, labels, 3) for e in outbox["entries"]), outbox["entries"]
    kind = get_kind("cnn")
    answered = [f for f in after["fused"] if f["answers"]]
    assert len(answered) >= len(stored)
    for record in answered:
        expected = kind.fuse(np.array([record["logits"]]), np.array([record["answers"]]), params)[0]
        assert record["fused"] == expected
    assert any(f["fused"] != f["modelTop1"] for f in answered), "people's answers never changed an answer"
    # audits: the agent's draw decides the same frames in each page session (a reload starts a new generator, as
    # an agent restart does); audited frames were confident, went to people and came back fused
    for session in (before["frames"], after["frames"]):
        assert [f["decision"] for f in session] == agent_decisions(session)
    audited = [f for f in before["frames"] if f["decision"] == "audit"]
    assert audited and all(not f["toPeople"] and f["sampleId"] in stored for f in audited)
    # hot swap between two frames: one swap, versions in order, nothing dropped
    swap = after["swaps"][0]
    versions = [f["version"] for f in after["frames"]]
    assert swap == {"from": "0.1.0", "to": "0.2.0", "atFrame": swap["atFrame"]}
    assert versions == ["0.1.0"] * swap["atFrame"] + ["0.2.0"] * (len(versions) - swap["atFrame"])
    for session in (before, after):  # nothing dropped, at the hot swap or anywhere else
        assert session["pacing"] == "all" and session["dropped"] == 0
        assert [f["captured"] for f in session["frames"]] == list(range(1, len(session["frames"]) + 1))
