"""The agent chooses its variant by context (AdaSpring, issue 22) on the `null` engine: a signed variant set of three
null bundles, a replayed battery trace, the hub away (no transport): the selector swaps through the hot-swap path
between two frames, stops escalating (tau 0, no audits) and reports the choice on status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.bundle import pack_bundle
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import ResultStatus
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.protos import hub_pb2
from hgen.runtime.bundle import BundleError
from hgen.runtime.bundle.variants import BudgetEntry, VariantIndex, member_entry, write_index

MEMBERS = {  # name: (latency ms, energy mJ, model-only accuracy)
    "big": (60.0, 0.5, 0.86), "mid": (30.0, 0.3, 0.83), "small": (10.0, 0.1, 0.82)}


@pytest.fixture
def variant_set(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    keys = make_keys(tmp_path / "keys")
    root = tmp_path / "set"
    root.mkdir()
    entries = []
    for i, (name, (latency, energy, accuracy)) in enumerate(MEMBERS.items()):
        archive = pack_bundle(null_bundle(tmp_path / name, keys, version=f"1.0.{i}", name="net"),
                              root / f"{name}.hgb")
        entries.append(member_entry(archive, name=name, temperature=1.0, accuracy_model_only=accuracy,
                                    latency_ms=latency, storage_mb=0.1, energy_mj=energy, memory_mb=1.0,
                                    levels=[{"labour": 0.0, "tau": 0.0, "accuracy": accuracy},
                                            {"labour": 0.05, "tau": 0.5, "accuracy": accuracy + 0.06}]))
    index = VariantIndex(name="net", version="1.0.0", target="x86_64", variants=tuple(entries),
                         demands=BudgetEntry(accuracy=0.8, latency_ms=100, storage_mb=1, energy_mj=1))
    write_index(root, index, keys.private_pem)
    trace = tmp_path / "power.jsonl"
    trace.write_text("\n".join(json.dumps({"t": i, "battery": b}) for i, b in enumerate([0.9, 0.9, 0.2, 0.2, 0.2])))
    yield root, keys.public_pem, trace


def agent_for(tmp: Path, root: Path, public_key: Path, trace: Path, **adapt: object) -> Agent:
    return Agent(parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(root / "mid.hgb"), "public_key": str(public_key),
                                         "store_dir": str(tmp / "store")},
        "source": {"kind": "images", "uri": str(tmp)}, "outbox": {"path": str(tmp / "outbox.sqlite")},
        "adapt": {"variants": str(root), "power": {"kind": "trace", "path": str(trace), "clock": "step"},
                  "interval_s": 1.0, "dwell": 1, "margin": 0.01, "min_switch_interval_s": 0.0, **adapt}}))


def frame(i: int) -> Frame:
    return Frame(i, np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), float(i))


def test_battery_drop_swaps_to_the_lean_variant_between_frames_and_status_says_why(tmp_path, variant_set) -> None:
    root, public_key, trace = variant_set
    agent = agent_for(tmp_path, root, public_key, trace)
    try:
        assert agent.adapt is not None and agent.adapt.selector.running == (1, 1)  # mid.hgb at its tau 0.5: level 1
        first = agent.adapt.tick(0.0)  # battery 0.9, hub away: level 0 only; accuracy weighs most: big
        assert first is not None and first.switch and first.variant == 0 and first.tau == 0.0
        agent.adapt.worker.join(timeout=30)
        assert agent.process_frame(frame(0)).bundle_version == "1.0.0"  # switched between two frames
        assert agent.adapt.tick(0.5) is None  # within interval_s: no selection
        assert not agent.adapt.tick(1.0).switch  # battery still 0.9
        low = agent.adapt.tick(2.0)  # battery 0.2: energy weighs 0.8
        assert low.switch and low.variant == 2 and "small" in low.reason
        agent.adapt.worker.join(timeout=30)
        results = [agent.process_frame(frame(i)) for i in range(1, 4)]
        assert [r.bundle_version for r in results] == ["1.0.2"] * 3 and all(r.final for r in results)
        assert all(r.status is ResultStatus.MODEL for r in results)  # no hub: nothing escalated or lost
        snap = agent.telemetry.snapshot()
        assert snap["adapt.variant"] == 2 and snap["adapt.battery"] == pytest.approx(0.2)
        assert snap["adapt.offline"] == 1.0 and snap["adapt.tau"] == 0.0 and snap["swaps"] == 2
        assert snap["adapt.dropped_labour"] == 3 and snap["adapt.lambda2"] == pytest.approx(0.8)  # the why
        assert snap["adapt.misses_accuracy"] == 0.0
        assert agent.gate.config.audit_share == 0.0  # offline: no audits either, the outbox stays empty
        assert agent.outbox.depth() == 0
    finally:
        agent.stop()


def test_a_tampered_set_is_refused_at_start(tmp_path, variant_set, temp_root) -> None:
    root, public_key, trace = variant_set
    (root / "small.hgb").write_bytes(b"not the signed member")
    with pytest.raises(BundleError, match="small"):
        agent_for(tmp_path, root, public_key, trace)
    assert list(temp_root.iterdir()) == []  # the running bundle, loaded before the set was checked, is released


def test_a_member_failing_its_check_keeps_the_running_one_and_says_so(tmp_path, variant_set) -> None:
    root, public_key, trace = variant_set
    agent = agent_for(tmp_path, root, public_key, trace)
    try:
        agent.config = agent.config.model_copy(update={"bundle": agent.config.bundle.model_copy(
            update={"expected_target": "rpi4"})})  # every member is x86_64: the swap's verification refuses it
        decision = agent.adapt.tick(0.0)
        assert decision.switch
        agent.adapt.worker.join(timeout=30)
        agent.process_frame(frame(0))
        assert agent.model.version == "1.0.1" and "failed" in agent.telemetry.problems["adapt"]
        assert agent.adapt.selector.running == (1, 1)
    finally:
        agent.stop()


def test_a_deep_hub_queue_asks_nobody(tmp_path, variant_set) -> None:
    """Replies report the hub's queue; deeper than max_hub_queue, the labour level drops to tau 0 as if offline."""
    root, public_key, trace = variant_set
    agent = agent_for(tmp_path, root, public_key, trace, max_hub_queue=5, offline="keep_escalating")
    try:
        calm = agent.adapt.read_context(0.0)
        assert calm.labour_allowed > 0  # no hub, but the offline policy keeps escalating
        agent._on_reply(hub_pb2.SampleReply(sample_id="unknown", queue_depth=6))
        assert agent.adapt.read_context(1.0).labour_allowed == 0.0
        assert agent.telemetry.snapshot()["adapt.hub_queue"] == 6
    finally:
        agent.stop()
