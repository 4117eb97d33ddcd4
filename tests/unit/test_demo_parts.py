"""The demo's pieces that need no training: the two pools, the per-dataset presets and the demands check."""

from types import SimpleNamespace

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.demo import DemoError, check_outcome, demo_config, format_demands, with_preset
from hgen.compiler.demo.pools import split_pools
from hgen.compiler.demo.presets import DIGITS, FASHION
from hgen.compiler.demo.summary import demands_met, field_accuracy, field_accuracy_line
from hgen.compiler.cli.main import exit_code_for
from hgen.compiler.errors import DemandsNotMetError, InvalidArgumentError


def test_pools_are_disjoint_cover_the_test_split_and_are_seeded():
    x = np.arange(100, dtype=np.float32).reshape(100, 1, 1, 1)
    test = Split(x, np.arange(100) % 10)
    pools = split_pools(test, 0.5, seed=3)
    stream, evaluation = set(pools.stream.x.ravel()), set(pools.evaluation.x.ravel())
    assert len(stream) == len(evaluation) == 50 and not stream & evaluation and stream | evaluation == set(range(100))
    assert np.array_equal(pools.evaluation.x, split_pools(test, 0.5, seed=3).evaluation.x)
    assert not np.array_equal(pools.evaluation.x, split_pools(test, 0.5, seed=4).evaluation.x)
    assert np.array_equal(pools.evaluation.y, pools.evaluation.x.ravel().astype(int) % 10)  # labels follow images


def test_a_pool_split_that_leaves_one_side_empty_is_refused():
    with pytest.raises(InvalidArgumentError, match="cannot be split"):
        split_pools(Split(np.zeros((1, 1, 1, 1)), np.zeros(1, int)), 0.5, seed=0)


def test_presets_fill_only_what_the_user_left_unset():
    digits = with_preset(demo_config(), "digits")
    assert digits.demands == DIGITS.demands and digits.base_epochs == DIGITS.base_epochs
    assert with_preset(demo_config(), "fashion-mnist").demands == FASHION.demands
    mine = with_preset(demo_config(base_epochs=2, demands={"accuracy": 0.5, "latency_ms": 1, "storage_mb": 1,
                                                           "energy_mj": 1, "labour": 0.1}), "digits")
    assert mine.base_epochs == 2 and mine.demands.accuracy == 0.5 and mine.final_epochs == DIGITS.final_epochs
    assert format_demands(DIGITS.demands).startswith("A >= 0.9, T <= 1000 ms")


def test_demands_met_reads_the_compiles_violations_and_the_streams_labour():
    compiled = SimpleNamespace(summary={"violations": ["accuracy 0.8241 < 0.86"]})
    met = demands_met(compiled, labour=0.04, budget=0.05)
    assert met == {"accuracy": False, "latency": True, "storage": True, "energy": True, "labour": True,
                   "labour on the stream": True}
    assert not demands_met(SimpleNamespace(summary={"violations": []}), labour=0.06, budget=0.05)["labour on the stream"]


def test_in_a_field_the_accuracy_demand_is_also_judged_on_the_field_and_only_reported():
    """The compile's demands hold on its clean test split; a noisy field can stay below them after the retrain,
    and the summary must say so rather than print 'accuracy met' alone."""
    assert field_accuracy(None, 0.86, 0.70) is None and field_accuracy_line(None) == ""
    missed = field_accuracy("noise", 0.86, 0.7604)
    assert missed == {"demand": 0.86, "fused_after": 0.7604, "met": False}
    assert "fused 0.7604 after the retrain, A >= 0.86 NOT met" in field_accuracy_line(missed)
    assert field_accuracy("noise", 0.86, 0.86)["met"]
    check_outcome({"dropped_frames": 0, "demands_met": {"accuracy": True}, "field_accuracy": missed,
                   "paths": {"report": "r.md"}})  # reported, not enforced


def test_a_missed_demand_or_a_dropped_frame_fails_the_demo():
    summary = {"dropped_frames": 0, "demands_met": {"accuracy": False, "labour": True}, "paths": {"report": "r.md"}}
    with pytest.raises(DemandsNotMetError, match="demands not met: accuracy") as missed:
        check_outcome(summary)
    assert exit_code_for(missed.value) == 4  # everything ran and was written, as a compile missing a demand
    check_outcome(summary, enforce_demands=False)
    with pytest.raises(DemoError, match="2 frames were dropped"):
        check_outcome(summary | {"dropped_frames": 2}, enforce_demands=False)


def test_the_demo_runs_a_registered_transport_and_starts_a_broker_only_for_one_that_needs_it():
    """The transport is checked against the agent's registry (no list of names of its own), and what the demo
    starts for it is the transport's own `via_broker`."""
    from hgen.edge_agent.transports import TRANSPORTS

    assert demo_config(transport="grpc").transport == "grpc"
    with pytest.raises(InvalidArgumentError, match="transport: .*unknown hub transport 'http'; valid choices: auto, grpc, mqtt"):
        demo_config(transport="http")
    assert {name: TRANSPORTS.get(name).via_broker for name in TRANSPORTS.names()} == {"grpc": False, "mqtt": True}
