"""The phone's TypeScript H-DNN and preprocessing (android_bridge/src) decide as the Python runtime does: the Python
side writes golden vectors (random logits, answers, estimators; gate streams with the agent's seeded audit and unfamiliar draws;
Python's random() sequences; random RGBA frames through the agent's preprocessing; random I420/NV12 camera planes
through `hgen.runtime.yuv`; random model inputs through the familiarity check) and node's test runner checks the
port against them (android_bridge/test/golden.test.ts). The app's unit tests (android_bridge/test/*.test.ts but golden:
replies, requests, bundle loading) run here too, with node's test runner on their build (dist/unit)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hgen.edge_agent.web_golden import write_golden
from hgen.hub.testing.phone import PhoneAppMissingError, built_app, node_binary


@pytest.fixture(scope="module")
def app() -> tuple[str, Path]:
    try:
        return node_binary(), built_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))


def test_typescript_port_matches_golden_vectors(app: tuple[str, Path], tmp_path: Path) -> None:
    node, dist = app
    golden = write_golden(tmp_path / "golden.json", seed=7)
    import json

    vectors = json.loads(golden.read_text())
    decisions = [d for case in vectors["gate"] for d in case["decisions"]]
    assert decisions.count("audit") >= 10  # the agent's audit draw is exercised, not only c < tau
    # confident but unfamiliar frames take their own draw: some escalated, some not, the audit draws kept in step
    drawn = [d for case in vectors["gate"] if 0 < case["unfamiliar_share"] < 1
             for d, u, below in zip(case["decisions"], case["unfamiliar"], case["unsure"]) if u and not below]
    assert "escalate" in drawn and "confident" in drawn
    flags = [flag for case in vectors["familiarity"] for flag in case["unfamiliar"]]
    assert 0 < sum(flags) < len(flags)  # familiar and unfamiliar images both checked
    run = subprocess.run([node, "--test", str(dist / "test")], env={**os.environ, "GOLDEN": str(golden)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# pass 9" in run.stdout and "# fail 0" in run.stdout, run.stdout[-2000:]


def test_a_wrong_port_is_caught(app: tuple[str, Path], tmp_path: Path) -> None:
    """The check can fail: one flipped gate decision in the vectors makes node's run fail."""
    import json

    node, dist = app
    golden = write_golden(tmp_path / "golden.json", seed=7)
    data = json.loads(golden.read_text())
    data["hdnn"][0]["needs_human"][0] = not data["hdnn"][0]["needs_human"][0]
    golden.write_text(json.dumps(data))
    run = subprocess.run([node, "--test", str(dist / "test")], env={**os.environ, "GOLDEN": str(golden)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "gate" in run.stdout


def test_typescript_unit_tests(app: tuple[str, Path]) -> None:
    """android_bridge's unit tests: replies fused with the sample's own model, held labour, dropped classes, one
    fusion per sample; requests stamped at each send with what is left of their deadline; the bundle's name, version
    and decompressed size on load; the outbox's caps, refunds, deadlines and paged resend; the labour bucket held to
    its capacity; camera restarts and hot-swap retries; the worker's bundle cache; the bounded frame window."""
    node, dist = app
    units = sorted((dist / "unit").glob("*.test.mjs"))
    assert {u.name for u in units} >= {"replies.test.mjs", "requests.test.mjs", "load.test.mjs", "outbox.test.mjs",
                                       "gate.test.mjs", "keepalive.test.mjs", "bundlecache.test.mjs",
                                       "recent.test.mjs"}, units
    run = subprocess.run([node, "--test", *map(str, units)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout, run.stdout[-2000:]
