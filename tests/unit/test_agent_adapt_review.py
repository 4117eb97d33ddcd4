"""Review faults of the variant selection on the device (AdaSpring) on the `null` engine: the selector follows what
actually runs (swaps in flight, rollbacks), hub updates and the set coexist, load and hub numbers do not latch,
mixed sets and bad power traces are refused, and the compiler ships the set's two ends."""

from __future__ import annotations

import json
import shutil
import threading
import types
from pathlib import Path
from types import SimpleNamespace as N
from typing import Any

import numpy as np
import pytest

from hgen.compiler.bundle import pack_bundle
from hgen.compiler.variants import spread
from hgen.edge_agent.adapt.power import open_power
from hgen.edge_agent.adapt.selector import Selector
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import AdaptConfig, PowerConfig, parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.edge_agent.transports import ConnectionState
from hgen.protos import hub_pb2
from hgen.runtime.bundle.variants import BudgetEntry, VariantIndex, member_entry, write_index
from hgen.runtime.variants import Budgets, Context, LabourLevel, VariantSpec

# name: (latency ms, energy mJ, model-only accuracy, memory MB)
MEMBERS = {"big": (60.0, 0.5, 0.86, 1.0), "mid": (30.0, 0.3, 0.83, 1.0), "small": (10.0, 0.1, 0.82, 1.0)}
VERSIONS = {"big": "1.0.0", "mid": "1.0.1", "small": "1.0.2"}


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return 1.7e9 + self.t


def make_set(tmp: Path, members: dict[str, tuple[float, float, float, float]] = MEMBERS,
             bundle_kw: dict[str, dict[str, Any]] | None = None) -> tuple[Path, Any]:
    keys = make_keys(tmp / "keys")
    root = tmp / "set"
    root.mkdir()
    entries = []
    for i, (name, (latency, energy, accuracy, memory)) in enumerate(members.items()):
        kw: dict[str, Any] = {"version": f"1.0.{i}", "name": "net", **(bundle_kw or {}).get(name, {})}
        archive = pack_bundle(null_bundle(tmp / name, keys, **kw), root / f"{name}.hgb")
        entries.append(member_entry(archive, name=name, temperature=1.0, accuracy_model_only=accuracy,
                                    latency_ms=latency, storage_mb=0.1, energy_mj=energy, memory_mb=memory,
                                    levels=[{"labour": 0.0, "tau": 0.0, "accuracy": accuracy},
                                            {"labour": 0.05, "tau": 0.5, "accuracy": accuracy + 0.06}]))
    index = VariantIndex(name="net", version="1.0.0", target="x86_64", variants=tuple(entries),
                         demands=BudgetEntry(accuracy=0.8, latency_ms=100, storage_mb=1, energy_mj=1))
    write_index(root, index, keys.private_pem)
    return root, keys


def agent_for(tmp: Path, root: Path, keys: Any, start: str | Path = "mid.hgb", battery: tuple[float, ...] = (0.9,),
              gate: dict[str, Any] | None = None, **adapt: Any) -> Agent:
    trace = tmp / "power.jsonl"
    trace.write_text("\n".join(json.dumps({"t": i, "battery": b}) for i, b in enumerate(battery)))
    return Agent(parse_agent_config({
        "device_id": "cam-1",
        "bundle": {"path": str(root / start if isinstance(start, str) else start), "public_key": str(keys.public_pem),
                   "store_dir": str(tmp / "store")},
        "source": {"kind": "images", "uri": str(tmp)}, "outbox": {"path": str(tmp / "outbox.sqlite")},
        "gate": gate or {},
        "adapt": {"variants": str(root), "power": {"kind": "trace", "path": str(trace), "clock": "step"},
                  "interval_s": 1.0, "dwell": 1, "margin": 0.01, "min_switch_interval_s": 0.0, **adapt}}))


def connected(**kw: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(state=ConnectionState.CONNECTED, stop=lambda: None, watch=lambda *a: None,
                                 start=lambda: None, send=lambda *a, **k: True, report_status=lambda *a: None, **kw)


def frame(i: int) -> Frame:
    return Frame(i, np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), float(i))


@pytest.fixture
def agents(tmp_path: Path):
    made: list[Agent] = []

    def make(*args: Any, **kw: Any) -> Agent:
        made.append(agent_for(*args, **kw))
        return made[-1]

    yield make
    for agent in made:
        agent.stop()


# --- 1, 2: the selector follows what actually runs --------------------------------------------------------------


def test_no_selection_while_a_swap_loads_and_the_landed_variant_is_what_the_selector_sees(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path, {**MEMBERS, "big": (60.0, 0.5, 0.86, 100.0), "mid": (30.0, 0.3, 0.83, 10.0)})
    meminfo = tmp_path / "meminfo"
    agent = agents(tmp_path, root, keys, meminfo=str(meminfo))
    loading, real_swap_to = threading.Event(), agent.swap_to

    def slow_swap_to(path: Path, **kw: Any) -> Any:  # a member that takes a while to load
        loading.wait(30)
        return real_swap_to(path, **kw)

    agent.swap_to = slow_swap_to  # type: ignore[method-assign]
    meminfo.write_text("MemAvailable:    1024000 kB\n")
    assert agent.adapt.tick(0.0).variant == 0  # big, still loading
    meminfo.write_text("MemAvailable:      51200 kB\n")  # 50 MB free: big (100 MB) no longer fits
    waiting = agent.adapt.tick(1.0)
    assert not waiting.switch and "loading" in waiting.reason
    assert agent.adapt.selector.running == (1, 1)  # what runs: mid, not the decision in flight
    loading.set()
    agent.adapt.worker.join(30)
    agent.process_frame(frame(0))
    assert agent.model.version == "1.0.0"
    leave = agent.adapt.tick(2.0)  # the selector sees big running without the memory for it
    assert leave.switch and leave.variant == 1 and "broke a constraint" in leave.reason
    agent.adapt.worker.join(30)
    agent.process_frame(frame(1))
    assert agent.model.version == "1.0.1" and agent.telemetry.snapshot()["adapt.variant"] == 1


def test_after_a_rollback_the_selector_follows_and_never_picks_the_failed_variant_again(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys)
    agent.adapt.tick(0.0)
    agent.adapt.worker.join(30)
    agent.process_frame(frame(0))
    assert agent.model.version == "1.0.0"

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("engine fault")

    agent.model.infer = broken  # type: ignore[method-assign]
    agent.process_frame(frame(1))
    assert agent.model.version == "1.0.1" and agent.slot.rejected_versions == {"1.0.0"}
    for t in (1.0, 2.0, 3.0):  # hub away: mid's tau 0.5 breaks the labour constraint; big would be best
        decision = agent.adapt.tick(t)
        assert decision.variant != 0 and (agent.adapt.worker is None or not agent.adapt.worker.is_alive())
    assert agent.adapt.selector.running == (1, 0) and agent.model.tau == 0.0
    assert "big (failed at run time)" in decision.reason
    assert agent.telemetry.snapshot()["adapt.variant"] == 1


def spec(name: str, latency: float, energy: float, accuracy: float) -> VariantSpec:
    return VariantSpec(name, latency, 0.1, energy, 1.0, (LabourLevel(0.0, 0.0, accuracy),))


def test_the_selector_never_chooses_a_rejected_variant() -> None:
    variants = (spec("big", 60, 0.5, 0.86), spec("small", 10, 0.1, 0.82))
    selector = Selector(variants, Budgets(0.8, 100, 1, 1), AdaptConfig(dwell=1, min_switch_interval_s=0), (1, 0))
    assert selector.decide(Context(battery=1.0), 0.0, rejected={0}).switch is False
    assert selector.decide(Context(battery=1.0), 1.0).variant == 0  # without it, big wins


# --- 3, 4: hub updates and the set ---------------------------------------------------------------------------------


def staged_update(tmp: Path, agent: Agent, keys: Any, version: str = "1.1.0") -> hub_pb2.ModelUpdate:
    update = pack_bundle(null_bundle(tmp / "upd", keys, version=version, name="net"), tmp / "u.hgb")
    agent.transport = connected(fetch_bundle=lambda notice, dest: Path(shutil.copy(update, dest)))
    notice = hub_pb2.ModelUpdate(bundle_name="net", version=version)
    follow(agent, notice)
    assert agent.slot.staged
    return notice


def follow(agent: Agent, notice: hub_pb2.ModelUpdate) -> None:
    """The agent's reaction to a notice, to its end (the download and swap thread joined)."""
    agent._on_update(notice)
    for thread in threading.enumerate():
        if thread.name == "agent-swap":
            thread.join(30)


def test_a_staged_update_is_not_replaced_by_a_variant_swap_and_then_runs(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys)
    staged_update(tmp_path, agent, keys)
    held = agent.adapt.tick(0.0)
    assert not held.switch and "staged" in held.reason and agent.adapt.worker is None
    agent.process_frame(frame(0))
    assert agent.model.version == "1.1.0" and agent.telemetry.count("swaps") == 1


def test_a_staged_update_replaced_before_it_ran_is_reported_and_followed_again(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys)
    notice = staged_update(tmp_path, agent, keys)
    agent.swap_to(root / "big.hgb")  # anything staged over it (not through the adapt path)
    assert agent.telemetry.count("updates_replaced") == 1 and "1.1.0" in agent.telemetry.problems["swap"]
    follow(agent, notice)  # the hub sends it again: followed
    agent.process_frame(frame(0))
    assert agent.model.version == "1.1.0"


def test_an_adapt_swap_refuses_to_stage_over_a_staged_update(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys)
    decision = agent.adapt.tick(0.0)
    staged_update(tmp_path, agent, keys)  # lands while the selector's decision is being applied
    agent.adapt._swap(decision)
    agent.process_frame(frame(0))
    assert agent.model.version == "1.1.0" and agent.telemetry.count("updates_replaced") == 0


def test_an_update_outside_the_set_stays_after_a_restart(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    first = agents(tmp_path, root, keys)
    staged_update(tmp_path, first, keys, version="2.0.0")  # from the hub, into the bundle store
    first.process_frame(frame(0))
    assert first.model.version == "2.0.0"
    first.stop()  # current.json records the update
    agent = agents(tmp_path, root, keys)  # the same config: the restart resumes the update from the store
    assert agent.model.version == "2.0.0"
    decision = agent.adapt.tick(0.0)
    assert not decision.switch and agent.adapt.worker is None
    agent.process_frame(frame(1))
    assert agent.model.version == "2.0.0" and "not in the variant set" in agent.telemetry.problems["adapt"]
    assert agent.telemetry.snapshot()["adapt.variant"] == -1


@pytest.mark.parametrize("version", ["0.9.0", "2.0.0"])
def test_a_device_flashed_with_a_bundle_outside_the_set_adopts_a_member_at_the_first_selection(
        tmp_path, agents, version) -> None:
    root, keys = make_set(tmp_path)  # bundle.path: a standalone bundle (older or newer than the set), not an update
    flashed = pack_bundle(null_bundle(tmp_path / "flashed", keys, version=version, name="net"),
                          tmp_path / "flashed.hgb")
    agent = agents(tmp_path, root, keys, start=flashed)
    decision = agent.adapt.tick(0.0)
    assert decision.switch and "nothing runs from the set yet" in decision.reason
    agent.adapt.worker.join(30)
    agent.process_frame(frame(0))
    assert agent.model.version == VERSIONS["big"] and agent.adapt.tick(1.0) is not None
    assert agent.telemetry.snapshot()["adapt.variant"] == 0 and not agent.telemetry.problems.get("adapt")


def test_the_offline_policy_still_applies_to_an_update_outside_the_set(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    update = pack_bundle(null_bundle(tmp_path / "upd", keys, version="1.1.0", name="net", tau=0.5),
                         tmp_path / "u.hgb")
    agent = agents(tmp_path, root, keys)
    agent.swap_to(update, expect=("net", "1.1.0"))
    agent.process_frame(frame(0))
    agent.adapt.tick(0.0)  # no transport: the hub is away
    assert agent.model.tau == 0.0 and agent.gate.config.audit_share == 0.0
    agent.transport = connected()
    agent.adapt.tick(1.0)  # back: the update's own tau and the audits again
    assert agent.model.tau == 0.5 and agent.gate.config.audit_share == 0.02
    assert agent.model.version == "1.1.0"


# --- 5: load ----------------------------------------------------------------------------------------------------


def test_a_steady_cpu_hog_does_not_make_the_device_flap(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys, start="big.hgb", interval_s=2.0, dwell=3, margin=0.05,
                   min_switch_interval_s=30.0)
    predicted = {"1.0.0": 60.0, "1.0.1": 30.0, "1.0.2": 10.0}
    hog = {"x": 1.0}
    real = agent.telemetry.snapshot

    def snapshot() -> dict[str, float]:
        return {**real(), "inference_ms_p50": predicted[agent.model.version] * hog["x"]}

    agent.telemetry.snapshot = snapshot  # type: ignore[method-assign]
    versions = []
    for step in range(200):
        hog["x"] = 2.0 if step >= 5 else 1.0  # the hog starts and never stops
        decision = agent.adapt.tick(2.0 * step)
        if decision is not None and decision.switch and agent.adapt.worker is not None:
            agent.adapt.worker.join(30)
            agent.slot.maybe_switch()
            versions.append(agent.model.version)
    assert versions == ["1.0.1"]  # mid for good once big breaks 100 ms under the hog
    assert agent.adapt.context.load == pytest.approx(2.0)


def test_a_variant_left_for_breaking_a_constraint_is_held_back_for_a_while() -> None:
    variants = (spec("big", 60, 0.5, 0.86), spec("mid", 30, 0.3, 0.83))
    config = AdaptConfig(interval_s=1.0, dwell=1, margin=0.0, min_switch_interval_s=10.0)
    selector = Selector(variants, Budgets(0.8, 100, 1, 1), config, (0, 0))
    left = selector.decide(Context(battery=1.0, load=2.0), 0.0)  # big at 120 ms
    assert left.switch and left.variant == 1
    kept = selector.decide(Context(battery=1.0, load=1.0), 20.0)  # looks fine again: not yet
    assert not kept.switch and "big (broke a constraint" in kept.reason
    assert selector.decide(Context(battery=1.0, load=1.0), 40.0).variant == 0  # 4 x 10 s later
    selector.decide(Context(battery=1.0, load=2.0), 41.0)  # broke again: twice as long
    assert not selector.decide(Context(battery=1.0, load=1.0), 100.0).switch
    assert selector.decide(Context(battery=1.0, load=1.0), 121.0).variant == 0


# --- 6, 7: hub numbers age out; timeouts count -------------------------------------------------------------------


def replied(agent: Agent, clock: FakeClock, i: int, after_s: float, status: ResultStatus) -> None:
    agent.adapt.on_result(Result(i, f"s{i}", 0.0, ResultStatus.PENDING, "escalated"))
    clock.t += after_s
    agent.adapt.on_result(Result(i, f"s{i}", 0.0, status, status.value))


def test_slow_replies_do_not_hold_the_device_offline_for_good(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys, "big.hgb", max_reply_latency_s=60.0)
    agent.transport, agent.clock = connected(), FakeClock()
    for i in range(5):
        replied(agent, agent.clock, i, 90.0, ResultStatus.FUSED)
    assert agent.adapt.tick(agent.clock.t).tau == 0.0 and agent.adapt.offline  # slow: offline
    agent.clock.t += 601.0  # over 10 x max_reply_latency_s later, nothing new came (none was sent)
    back = agent.adapt.tick(agent.clock.t)
    assert not agent.adapt.offline and agent.adapt.reply_latency() is None and back.tau == 0.5
    assert agent.gate.config.audit_share == 0.02


def test_a_reconnect_forgets_old_reply_latencies(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys, "big.hgb", max_reply_latency_s=60.0)
    agent.transport, agent.clock = connected(), FakeClock()
    replied(agent, agent.clock, 0, 90.0, ResultStatus.FUSED)
    agent.adapt.tick(agent.clock.t)
    assert agent.adapt.offline
    agent.transport.state = ConnectionState.CONNECTING
    agent.adapt.tick(agent.clock.t + 1)
    agent.transport.state = ConnectionState.CONNECTED
    agent.adapt.tick(agent.clock.t + 2)
    assert not agent.adapt.offline and agent.adapt.reply_latency() is None


def test_a_deep_hub_queue_is_forgotten_when_no_reply_refreshes_it(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys, "big.hgb", gate={"audit_share": 0.0}, max_hub_queue=5,
                   offline="keep_escalating")
    agent.transport, agent.clock = connected(), FakeClock()
    agent._on_reply(hub_pb2.SampleReply(sample_id="x", queue_depth=6))
    assert agent.adapt.tick(0.0).tau == 0.0 and agent.adapt.context.labour_allowed == 0.0
    assert agent.adapt.tick(599.0).tau == 0.0  # still recent
    assert agent.adapt.tick(601.0).tau == 0.5 and agent.adapt.hub_queue == 0


def test_a_hub_that_never_answers_is_away(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys, "big.hgb", max_reply_latency_s=60.0)
    agent.transport, agent.clock = connected(), FakeClock()
    for i in range(3):
        replied(agent, agent.clock, i, 30.0, ResultStatus.TIMEOUT)  # patience_s 60: counted as 60 s at least
    assert agent.adapt.reply_latency() == 60.0
    replied(agent, agent.clock, 3, 600.0, ResultStatus.TIMEOUT)
    replied(agent, agent.clock, 4, 600.0, ResultStatus.TIMEOUT)
    decision = agent.adapt.tick(agent.clock.t)
    assert agent.adapt.offline and decision.tau == 0.0 and agent.gate.config.audit_share == 0.0


# --- 8: a set must be one model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("member", "kw", "what"), [
    ("small", {"name": "other-net"}, "model name"),
    ("big", {"kind": "hyolo", "classes": 10}, "kind"),
    ("small", {"labels": ["cat", "dog", "car", "bus", "cow", "pig", "hen", "owl", "bee", "ant"]}, "labels"),
    ("small", {"classes": 5}, "labels"),
])
def test_a_set_whose_members_are_not_one_model_is_refused_at_start(tmp_path, member, kw, what) -> None:
    root, keys = make_set(tmp_path, bundle_kw={member: kw})
    with pytest.raises(AgentConfigError, match=f"disagree on the {what}.*{member}"):
        agent_for(tmp_path, root, keys)


def test_a_variant_swap_expects_the_members_signed_name_and_version(tmp_path, agents) -> None:
    root, keys = make_set(tmp_path)
    agent = agents(tmp_path, root, keys)
    seen: list[dict[str, Any]] = []
    agent.swap_to = lambda path, **kw: seen.append(kw)  # type: ignore[assignment, method-assign]
    agent.adapt.tick(0.0)
    agent.adapt.worker.join(30)
    assert seen[0]["expect"] == ("net", VERSIONS["big"])


# --- 9: the compiler ships both ends -----------------------------------------------------------------------------


def test_spread_keeps_the_most_accurate_and_the_leanest_for_small_k() -> None:
    front = [N(name=n, measured=N(energy_mj=e, accuracy=a)) for n, e, a in
             [("lean", 0.1, 0.80), ("accurate", 0.3, 0.90), ("hungry", 0.5, 0.85), ("x", 0.4, 0.84)]]
    assert [c.name for c in spread(front, 1)] == ["accurate"]  # type: ignore[arg-type]
    assert [c.name for c in spread(front, 2)] == ["accurate", "lean"]  # type: ignore[arg-type]
    three = [c.name for c in spread(front, 3)]  # type: ignore[arg-type]
    assert len(three) == 3 and {"accurate", "lean"} <= set(three)


# --- 10: power traces --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("battery", ["15", "NaN", "-3", "Infinity"])
def test_a_power_trace_battery_outside_0_1_is_refused_naming_the_line(tmp_path, battery) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(f'{{"t": 0, "battery": 0.5}}\n\n{{"t": 1, "battery": {battery}}}\n')
    with pytest.raises(AgentConfigError, match="line 3.*battery"):
        open_power(PowerConfig(kind="trace", path=trace))
