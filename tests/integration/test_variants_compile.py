"""The compiler ships a variant set (issue 22, AdaSpring) and the agent runs it: a short search on digits, two
front variants fine-tuned, calibrated, lowered to LiteRT and signed; the set verifies, and an agent on one member
applies the selector's choice (variant and tau) for a drained battery with the hub away, through the hot-swap
path, answering every frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.compile import compile_config
from hgen.compiler.variants import compile_variants
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import digits_28
from hgen.runtime.bundle.variants import load_variant_set

DEMANDS = {"accuracy": 0.5, "latency_ms": 60000, "storage_mb": 2, "energy_mj": 3, "labour": 0.05}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("variants")
    config = compile_config(dataset="digits:lowres", device="rpi4", base_epochs=3, final_epochs=1,
                            finetune_samples=300, budget_minutes=2, episodes=3, out=str(out), demands=DEMANDS)
    return compile_variants(config, k=2, labour_levels=(0.0, 0.05))


def test_the_set_holds_calibrated_variants_with_tau_per_labour_level(shipped: dict) -> None:
    variants = load_variant_set(shipped["dir"], shipped["public_key"], expected_target="rpi4")
    assert len(variants.index.variants) == 2 and shipped["front"] >= len(variants.index.variants)
    for entry in variants.index.variants:
        assert entry.temperature > 0 and entry.memory_mb > entry.storage_mb > 0 and entry.energy_mj > 0
        assert entry.levels[0].tau == 0.0 and entry.levels[0].labour == 0.0  # level 0: nobody asked
        assert [lv.labour for lv in entry.levels] == sorted(lv.labour for lv in entry.levels)
    index = json.loads((Path(shipped["dir"]) / "variants.json").read_text())
    assert index["demands"]["accuracy"] == DEMANDS["accuracy"]


def test_agent_runs_the_shipped_set_and_applies_the_selection(shipped: dict, tmp_path: Path) -> None:
    variants = load_variant_set(shipped["dir"], shipped["public_key"])
    assert len(variants.index.variants) == 2  # seeded: the short search's front holds more than two
    energies = [e.energy_mj for e in variants.index.variants]
    lean = int(np.argmin(energies))
    start = 1 - lean if energies[0] != energies[1] else 0
    trace = tmp_path / "power.jsonl"
    trace.write_text("\n".join(json.dumps({"t": i, "battery": 0.05}) for i in range(3)))
    agent = Agent(parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(variants.path(start)), "public_key": shipped["public_key"],
                   "store_dir": str(tmp_path / "store")},
        "source": {"kind": "images", "uri": str(tmp_path)}, "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "adapt": {"variants": shipped["archive"], "power": {"kind": "trace", "path": str(trace), "clock": "step"},
                  "dwell": 1, "margin": 0.0, "min_switch_interval_s": 0}}))
    try:
        images, _ = digits_28(8)
        frames = [Frame(i, (images[i] * 255).astype(np.uint8), float(i)) for i in range(8)]
        before = agent.process_frame(frames[0])
        decision = agent.adapt.tick(0.0)
        assert decision is not None and decision.switch
        if agent.adapt.worker is not None:
            agent.adapt.worker.join(timeout=60)
        results = [agent.process_frame(f) for f in frames[1:]]
        assert all(r.final and r.label is not None for r in [before, *results])
        running = agent.adapt.selector.running
        assert running is not None and agent.model.tau == decision.tau
        assert agent.model.path.read_bytes() == variants.path(running[0]).read_bytes()  # a member of the set
        assert agent.telemetry.snapshot()["adapt.variant"] == running[0]
    finally:
        agent.stop()
