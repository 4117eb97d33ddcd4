"""Variants chosen by context (AdaSpring, issue 22): Eq. 1 with battery-driven weights, hard constraints, the
selector's hysteresis, the battery readers (sysfs tree, replayed trace) and the signed variant set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.adapt.power import open_power
from hgen.edge_agent.adapt.selector import Selector
from hgen.edge_agent.config import AdaptConfig, PowerConfig
from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.testing import make_keys
from hgen.runtime.bundle import BundleError, SignatureError
from hgen.runtime.bundle.variants import (
    BudgetEntry,
    VariantIndex,
    load_variant_set,
    member_entry,
    open_variant_set,
    pack_variant_set,
    write_index,
)
from hgen.runtime.variants import Budgets, Context, LabourLevel, OptionTable, VariantSpec, select, weights

BUDGETS = Budgets(accuracy=0.80, latency_ms=100.0, storage_mb=1.0, energy_mj=1.0)


def levels(model_only: float, gain: float) -> tuple[LabourLevel, ...]:
    """Model only (tau 0), then two labour levels that buy accuracy."""
    return (LabourLevel(0.0, 0.0, model_only), LabourLevel(0.03, 0.5, model_only + gain / 2),
            LabourLevel(0.06, 0.7, model_only + gain))


VARIANTS = (
    VariantSpec("big", latency_ms=60, storage_mb=0.9, energy_mj=0.5, memory_mb=200, levels=levels(0.86, 0.06)),
    VariantSpec("mid", latency_ms=30, storage_mb=0.5, energy_mj=0.3, memory_mb=120, levels=levels(0.83, 0.07)),
    VariantSpec("small", latency_ms=10, storage_mb=0.2, energy_mj=0.1, memory_mb=60, levels=levels(0.79, 0.08)),
)
TABLE = OptionTable.of(VARIANTS)


def test_weights_follow_the_battery_and_never_drop_energy_below_0_3() -> None:
    assert weights(0.85, False) == pytest.approx((0.7, 0.3))
    assert weights(0.3, False) == pytest.approx((0.3, 0.7))
    assert weights(0.1, True) == pytest.approx((0.7, 0.3))  # charging counts as full
    assert weights(None, False) == pytest.approx((0.7, 0.3))  # no battery (mains)


def test_eq1_prefers_accuracy_on_a_full_battery_and_energy_on_a_low_one() -> None:
    full = select(TABLE, BUDGETS, Context(battery=0.9))
    low = select(TABLE, BUDGETS, Context(battery=0.2))
    assert full is not None and low is not None
    assert VARIANTS[full.variant].name == "big" and full.level == 2  # most accuracy, labour allowed
    assert VARIANTS[low.variant].energy_mj < VARIANTS[full.variant].energy_mj
    expected = 0.7 * math.log(0.92 - 0.80) + 0.3 * math.log(1.0 - 0.5)
    assert full.score == pytest.approx(expected)


def test_with_every_option_missing_the_accuracy_demand_the_least_missing_wins() -> None:
    strict = Budgets(accuracy=0.95, latency_ms=100.0, storage_mb=1.0, energy_mj=1.0)
    choice = select(TABLE, strict, Context(battery=0.2, labour_allowed=0.0))  # energy weighs most, nobody to ask
    assert choice is not None and VARIANTS[choice.variant].name == "big"  # 0.86 alone: closest to 0.95
    assert choice.misses == ("accuracy",) and "misses accuracy" in choice.reason(VARIANTS)


def test_hard_constraints_drop_options_and_say_which() -> None:
    loaded = select(TABLE, BUDGETS, Context(battery=0.9, load=3.0))  # a CPU hog: 60 ms runs as 180 ms
    assert loaded is not None and VARIANTS[loaded.variant].name == "mid"
    assert loaded.dropped["latency"] == 3 and "dropped 3 for latency" in loaded.reason(VARIANTS)
    offline = select(TABLE, BUDGETS, Context(battery=0.9, labour_allowed=0.0))
    assert offline is not None and offline.level == 0 and offline.tau == 0.0  # nobody to ask: tau 0
    tight = select(TABLE, BUDGETS, Context(battery=0.9, free_memory_mb=100))
    assert tight is not None and VARIANTS[tight.variant].name == "small"
    assert tight.dropped["memory"] == 6 and tight.misses == ()
    assert select(TABLE, BUDGETS, Context(load=20.0)) is None  # nothing fits: the caller keeps what runs


def test_hysteresis_needs_margin_and_dwell_and_leaves_a_broken_option_at_once() -> None:
    config = AdaptConfig(margin=0.05, dwell=3, min_switch_interval_s=10)
    selector = Selector(VARIANTS, BUDGETS, config)
    first = selector.decide(Context(battery=0.9), now=0.0)
    assert first.switch and VARIANTS[first.variant].name == "big"
    for t in (1.0, 2.0):  # the battery drops: the energy-lean option wins, but only after 3 wins and 10 s
        decision = selector.decide(Context(battery=0.2), now=t)
        assert not decision.switch and "won" in decision.reason
    assert not selector.decide(Context(battery=0.2), now=3.0).switch  # third win, but the last swap was 3 s ago
    later = selector.decide(Context(battery=0.2), now=12.0)
    assert later.switch and VARIANTS[later.variant].name == "small"
    # flapping context around one point: no switch while gains stay under the margin
    before = selector.switches
    for t, battery in enumerate([0.21, 0.19, 0.2, 0.22, 0.18] * 4):
        selector.decide(Context(battery=battery), now=20.0 + t)
    assert selector.switches == before
    hub_away = selector.decide(Context(battery=0.2, labour_allowed=0.0), now=40.0)  # the running tau asks people
    assert hub_away.switch and "broke a constraint" in hub_away.reason
    assert hub_away.tau == 0.0 and hub_away.level == 0
    assert VARIANTS[hub_away.variant].name == "mid"  # alone, small (0.79) would miss the accuracy demand


def test_sysfs_reader_reads_batteries_and_mains(tmp_path: Path) -> None:
    """A power_supply tree in the kernel's file format (the real /sys has no battery on this machine)."""
    for name, files in {"BAT0": {"type": "Battery", "capacity": "42", "status": "Discharging"},
                        "AC": {"type": "Mains", "online": "0"}}.items():
        (tmp_path / name).mkdir()
        for key, value in files.items():
            (tmp_path / name / key).write_text(value + "\n")
    reader = open_power(PowerConfig(kind="sysfs", path=tmp_path))
    assert reader.read(0.0).battery == pytest.approx(0.42) and not reader.read(0.0).charging
    (tmp_path / "AC" / "online").write_text("1\n")
    assert reader.read(0.0).charging
    empty = open_power(PowerConfig(kind="sysfs", path=tmp_path / "missing")).read(0.0)
    assert empty.battery is None and "not found" in empty.detail


def test_trace_reader_replays_by_time_or_step_and_refuses_bad_lines(tmp_path: Path) -> None:
    trace = tmp_path / "power.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in [{"t": 0, "battery": 0.85}, {"t": 10, "battery": 0.6},
                                                         {"t": 20, "battery": 0.3, "charging": True}]))
    by_time = open_power(PowerConfig(kind="trace", path=trace))
    assert [by_time.read(t).battery for t in (100.0, 105.0, 111.0, 150.0)] == [0.85, 0.85, 0.6, 0.3]
    by_step = open_power(PowerConfig(kind="trace", path=trace, clock="step"))
    assert [by_step.read(0).battery for _ in range(4)] == [0.85, 0.6, 0.3, 0.3]
    trace.write_text('{"t": 0, "battery": 0.5}\n{"t": "soon"}\n')
    with pytest.raises(AgentConfigError, match="line 2"):
        open_power(PowerConfig(kind="trace", path=trace))


def test_variant_set_index_is_signed_and_pins_every_member(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    members = []
    for spec in VARIANTS:
        archive = tmp_path / f"{spec.name}.hgb"
        archive.write_bytes(spec.name.encode() * 100)  # a member's bytes; members verify themselves when loaded
        members.append(member_entry(archive, name=spec.name, temperature=1.0,
                                    accuracy_model_only=spec.levels[0].accuracy, latency_ms=spec.latency_ms,
                                    storage_mb=spec.storage_mb, energy_mj=spec.energy_mj, memory_mb=spec.memory_mb,
                                    levels=[{"labour": lv.labour, "tau": lv.tau, "accuracy": lv.accuracy}
                                            for lv in spec.levels]))
    index = VariantIndex(name="net", version="1.0.0", target="x86_64",
                         demands=BudgetEntry(accuracy=0.8, latency_ms=100, storage_mb=1, energy_mj=1),
                         variants=tuple(members))
    write_index(tmp_path, index, keys.private_pem)
    loaded = load_variant_set(tmp_path, keys.public_pem, expected_target="x86_64")
    assert loaded.specs == VARIANTS and loaded.index.budgets() == BUDGETS
    assert loaded.path(2) == tmp_path / "small.hgb"
    (tmp_path / "mid.hgb").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="mid"):
        load_variant_set(tmp_path, keys.public_pem)
    (tmp_path / "mid.hgb").write_bytes(b"mid" * 100)
    data = json.loads((tmp_path / "variants.json").read_text())
    data["demands"]["accuracy"] = 0.5  # a looser demand, not signed
    (tmp_path / "variants.json").write_text(json.dumps(data))
    with pytest.raises(SignatureError):
        load_variant_set(tmp_path, keys.public_pem)


def test_option_table_is_flat_and_in_order() -> None:
    assert len(TABLE.variant) == 9 and list(TABLE.level[:3]) == [0, 1, 2]
    assert np.all(TABLE.tau[TABLE.level == 0] == 0.0)


def signed_set(root: Path, keys) -> Path:
    root.mkdir(parents=True)
    members = [member_entry(_write(root / f"{spec.name}.hgb", spec.name.encode() * 100), name=spec.name,
                            temperature=1.0, accuracy_model_only=spec.levels[0].accuracy, latency_ms=spec.latency_ms,
                            storage_mb=spec.storage_mb, energy_mj=spec.energy_mj, memory_mb=spec.memory_mb,
                            levels=[{"labour": lv.labour, "tau": lv.tau, "accuracy": lv.accuracy}
                                    for lv in spec.levels]) for spec in VARIANTS]
    index = VariantIndex(name="net", version="1.0.0", target="x86_64", variants=tuple(members),
                         demands=BudgetEntry(accuracy=0.8, latency_ms=100, storage_mb=1, energy_mj=1))
    write_index(root, index, keys.private_pem)
    return root


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_one_file_set_is_verified_while_it_is_unpacked(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    archive = pack_variant_set(signed_set(tmp_path / "set", keys))
    assert archive.suffix == ".hgv"
    opened = open_variant_set(archive, keys.public_pem, tmp_path / "store")
    assert opened.specs == VARIANTS and opened.root == tmp_path / "store" / "set"
    assert (opened.root / "small.hgb").read_bytes() == b"small" * 100
    other = make_keys(tmp_path / "other")
    with pytest.raises(SignatureError):  # signed by a key this device does not trust
        open_variant_set(archive, other.public_pem, tmp_path / "store2")
    data = bytearray(archive.read_bytes())
    at = data.find(b"mid" * 100)
    data[at:at + 3] = b"MID"  # one member changed inside the archive
    archive.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="mid"):
        open_variant_set(archive, keys.public_pem, tmp_path / "store3")
    archive.write_bytes(bytes(data[:600]))  # truncated
    with pytest.raises(BundleError, match="truncated or corrupt|starts with"):
        open_variant_set(archive, keys.public_pem, tmp_path / "store4")
