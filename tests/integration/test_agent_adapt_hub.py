"""Run-time adaptation (issue 22) with real parts: a real LiteRT bundle (LeNet-5 trained briefly on digits), a real
hub on loopback gRPC with the simulated crowd (simulated people, labelled so), the class prior and the variant
selector both on. People's fused answers teach the prior; the selector sees the hub connected, times its replies,
asks people at the variant's tau, and reports both on the status the hub receives.

A camera cannot run here: frames come from an MJPG video read through the same OpenCV path a camera uses. The
battery comes from a replayed trace (this machine has none); the variant set's predicted costs are written by the
test for two real signed bundles (the compiler's own numbers are tested in test_variants_compile.py).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import ResultStatus
from hgen.edge_agent.testing import ResultCollector, digits_28, start_hub, write_video
from hgen.runtime.bundle.variants import BudgetEntry, VariantIndex, member_entry, write_index

DEVICE = "cam-1"


@pytest.fixture
def variant_set(tmp_path: Path, bundles: dict[str, Path]) -> Path:
    """v1 and v2 of the cached LiteRT bundles as a signed set; v2 predicted leaner, v1 more accurate."""
    root = tmp_path / "set"
    root.mkdir()
    entries = []
    for name, accuracy, energy in (("v1", 0.80, 0.5), ("v2", 0.78, 0.2)):
        member = root / f"{name}.hgb"
        member.write_bytes(bundles[name].read_bytes())
        entries.append(member_entry(member, name=name, temperature=1.0, accuracy_model_only=accuracy,
                                    latency_ms=1.0, storage_mb=0.1, energy_mj=energy, memory_mb=1.0,
                                    levels=[{"labour": 0.0, "tau": 0.0, "accuracy": accuracy},
                                            {"labour": 0.5, "tau": 0.9, "accuracy": accuracy + 0.1}]))
    write_index(root, VariantIndex(name="lenet5-digits", version="1.0.0", target="x86_64", variants=tuple(entries),
                                   demands=BudgetEntry(accuracy=0.7, latency_ms=100, storage_mb=1, energy_mj=1)),
                bundles["private_key"])
    return root


def test_prior_and_selector_on_a_real_hub(tmp_path: Path, bundles: dict[str, Path], variant_set: Path) -> None:
    images, _ = digits_28(120)
    video = write_video(tmp_path / "digits.avi", 120, images=images)
    trace = tmp_path / "power.jsonl"
    trace.write_text(json.dumps({"t": 0, "battery": 0.9}) + "\n")
    hub = start_hub(tmp_path / "hub.db", [DEVICE], answer="second")
    collector = ResultCollector()
    config = parse_agent_config({
        "device_id": DEVICE,
        "bundle": {"path": str(variant_set / "v1.hgb"), "public_key": str(bundles["public_key"]),
                   "expected_target": "x86_64", "store_dir": str(tmp_path / "store")},
        "source": {"kind": "video", "uri": str(video), "fps_limit": 60},
        "gate": {"audit_share": 0.0},
        "batching": {"size": 4, "max_wait_s": 0.2, "patience_s": 60},
        "hub": {"url": hub.grpc_url, "secret": hub.secret(DEVICE), "watch_updates": False},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "telemetry": {"status_interval_s": 0.5},
        "prior": {"enabled": True, "window": 10},
        "adapt": {"variants": str(variant_set), "power": {"kind": "trace", "path": str(trace)},
                  "interval_s": 0.2, "min_switch_interval_s": 0},
    })
    try:
        with Agent(config, callbacks=[collector]) as agent:
            assert agent.wait(120)
            assert agent.wait_settled(60) and agent.wait_outbox_empty(30)
            snap = agent.telemetry.snapshot()
            timed = agent.adapt.reply_latency()  # None: no reply was timed
            status = agent.telemetry.device_status(DEVICE, agent.model.name, agent.model.version)
    finally:
        hub.stop()
    pending = {r.sample_id for r in collector.with_status("pending")}
    fused = Counter(r.sample_id for r in collector.with_status("fused"))
    assert pending and set(fused) == pending and max(fused.values()) == 1  # nothing lost with both on
    assert len({r.frame_index for r in collector.results if r.status in (ResultStatus.MODEL,
                                                                          ResultStatus.PENDING)}) == 120
    # the selector saw the hub: connected, replies timed, people asked at a variant's labour level
    assert snap["adapt.offline"] == 0.0 and timed is not None and snap["adapt.level"] == 1
    assert math.isfinite(snap["adapt.reply_s_p50"]) and snap["adapt.reply_s_p50"] >= 0.0
    assert snap["adapt.tau"] == 0.9 and snap["adapt.variant"] in (0.0, 1.0)
    assert 0 <= snap["adapt.hub_queue"] < len(pending)  # the hub reports its queue in every reply
    # the prior learned from confident answers and people's fused answers, on the status the hub gets
    assert snap["prior_observed"] >= len(pending)
    assert all(f"prior.{label}" in status.metrics for label in agent.model.manifest.labels)
    assert "adapt.dropped_labour" in status.metrics
