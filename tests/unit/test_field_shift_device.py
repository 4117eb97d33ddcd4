"""The field-shift benchmark's device (tools/bench/fieldlib.py) sends what the agent's labour limit lets through."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
from fieldlib import admitted  # noqa: E402

from hgen.edge_agent.gating import LabourBucket  # noqa: E402
from hgen.runtime.labour import labour_ratio  # noqa: E402


def test_the_device_sends_within_the_labour_demand_from_the_first_frame() -> None:
    rng = np.random.default_rng(0)
    wanted = rng.random(2000) < 0.6  # a shifted field: the gate wants people for 60 % of frames
    l0 = rng.uniform(1.0, 9.0, 2000)
    sent = admitted(LabourBucket(0.05, 1000), wanted, l0)
    assert not (sent & ~wanted).any() and 0 < sent.sum() < wanted.sum()
    running = np.cumsum(np.where(sent, l0, 0.0)) / np.arange(1, 2001)
    assert labour_ratio(float(running.max()), 1) <= 0.05 + 1e-9  # never over L, at any prefix
    assert admitted(LabourBucket(None, 1000), wanted, l0).tolist() == wanted.tolist()  # no limit: the gate's own


def test_the_device_reserves_what_the_agent_reserves() -> None:
    """The agent reserves the most m people can spend (m x 3 = 9): the benchmark's device took the estimate."""
    wanted = np.zeros(16, bool)
    wanted[[9, 14]] = True  # after 10 frames the bucket holds 6 operations, after 15 it holds 9 (0.6 per frame)
    sent = admitted(LabourBucket(0.05, 1000), wanted, np.full(16, 3.0), m=3)
    assert np.flatnonzero(sent).tolist() == [14]
