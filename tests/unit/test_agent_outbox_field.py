"""The outbox on a field device (null engine, real SQLite, no hub): a restart restores a backlog without reading its
images; the outbox is bounded in bytes as well as samples, and gives its space back to the card once drained (an
older file without auto_vacuum keeps working and is converted once drained); the resend scan reads a narrow index
and nothing at all while the link cannot take anything; and samples the bound dropped are forgotten by the agent,
their labour refunded and their final result emitted."""

from __future__ import annotations

import json
import sqlite3
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent import outbox as outbox_module
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.outbox import Outbox, OutboxRow
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks import CallbackSink
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2

OLD_SCHEMA = ("CREATE TABLE samples (seq INTEGER PRIMARY KEY AUTOINCREMENT, sample_id TEXT NOT NULL UNIQUE, batch_id "
              "TEXT NOT NULL, created REAL NOT NULL, frame_index INTEGER NOT NULL, m INTEGER NOT NULL, deadline REAL "
              "NOT NULL, payload BLOB NOT NULL, logits BLOB NOT NULL, meta TEXT NOT NULL)")  # an agent before this


def row(sample_id: str, image: bytes = b"") -> OutboxRow:
    pending = Result(0, sample_id, 0.0, ResultStatus.PENDING, "people", label=3, model_label=3, confidence=0.4)
    meta = {"result": pending.to_dict(), "kind": "cnn", "temperature": 1.0, "lambda": 0.1, "shape": [10],
            "size": [28, 28]}
    sample = hub_pb2.Sample(sample_id=sample_id, image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=image))
    return OutboxRow(sample_id, "b-1", time.time(), 0, 3, time.time() + 600, sample.SerializeToString(),
                     np.arange(10, dtype=np.float32).tobytes(), json.dumps(meta))


def frame(index: int) -> Frame:
    return Frame(index, np.random.default_rng(index).integers(0, 256, (28, 28), dtype=np.uint8), time.time())


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys)
    agents: list[Agent] = []

    def make(**extra: object) -> Agent:
        config = parse_agent_config({
            "device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
            "source": {"kind": "images", "uri": str(tmp_path)}, "batching": {"patience_s": 30},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")}} | extra)
        agents.append(Agent(config))
        return agents[-1]

    yield make
    for agent in agents:
        agent.stop()


# --- restore -----------------------------------------------------------------------------------------------


def test_a_restart_restores_a_backlog_without_reading_its_images(make_agent) -> None:
    """`_restore` read every stored image at once (`pending()`): 0.5 MB each, thousands after an outage."""
    first = make_agent()
    first.outbox.put([row(f"s-{i}", bytes(200_000)) for i in range(100)])  # 20 MB of images
    first.stop()
    again = make_agent()
    tracemalloc.start()
    try:
        again._restore()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000 and sorted(again._waiting) == sorted(f"s-{i}" for i in range(100))
    assert np.array_equal(again._waiting["s-7"].logits, np.arange(10, dtype=np.float32))
    assert again.outbox.get("s-7").payload == row("s-7", bytes(200_000)).payload  # still there to be sent


# --- bounds ------------------------------------------------------------------------------------------------


def test_the_byte_bound_drops_the_oldest_names_them_and_counts_them(tmp_path: Path) -> None:
    size = row("s-0", bytes(10_000)).size()
    box = Outbox(tmp_path / "o.sqlite", 100, max_bytes=3 * size)
    puts = [box.put([row(f"s-{i}", bytes(10_000))]) for i in range(5)]
    assert [p.stored for p in puts] == [(f"s-{i}",) for i in range(5)]
    assert [p.dropped for p in puts] == [(), (), (), ("s-0",), ("s-1",)]
    assert [r.sample_id for r in box.pending()] == ["s-2", "s-3", "s-4"] and box.dropped() == 2
    assert box.stored_bytes() == 3 * size
    box.close()


def test_the_sample_bound_still_holds_and_a_lowered_one_drops_as_many_as_it_takes(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 4)
    box.put([row(f"s-{i}") for i in range(4)])
    box.max_samples = 2
    assert box.put([row("s-4")]).dropped == ("s-0", "s-1", "s-2")
    assert [r.sample_id for r in box.pending()] == ["s-3", "s-4"] and box.dropped() == 3
    box.close()


def test_drop_newest_refuses_a_sample_over_the_byte_bound_and_an_oversized_one_is_refused(tmp_path: Path) -> None:
    size = row("s-0", bytes(10_000)).size()
    box = Outbox(tmp_path / "o.sqlite", 100, "drop_newest", max_bytes=2 * size)
    puts = [box.put([row(f"s-{i}", bytes(10_000))]) for i in range(3)]
    assert [p.stored for p in puts] == [("s-0",), ("s-1",), ()] and all(p.dropped == () for p in puts)
    oldest = Outbox(tmp_path / "p.sqlite", 100, max_bytes=2 * size)
    assert oldest.put([row("big", bytes(30_000))]).stored == () and oldest.dropped() == 1  # alone over the bound
    assert box.dropped() == 1 and [r.sample_id for r in box.pending()] == ["s-0", "s-1"]
    box.close()
    oldest.close()


def test_the_byte_count_is_the_files_after_a_reopen_and_a_failed_write(tmp_path: Path) -> None:
    """Counted in memory (no SUM over the table per put): it must survive restarts and writes rolled back."""
    box = Outbox(tmp_path / "o.sqlite", 100)
    box.put([row(f"s-{i}", bytes(1000 * i)) for i in range(5)])
    box.ack(["s-1"])
    box.settle("s-2", "{}")
    counted = box.stored_bytes()
    broken = OutboxRow(**{**row("x").__dict__, "frame_index": object()})  # not bindable: the put rolls back
    with pytest.raises(outbox_module.OutboxError):
        box.put([row("s-9", bytes(5000)), broken])
    assert box.stored_bytes() == counted == sum(r.size() for r in box.pending()) and box.depth() == 3
    box.close()
    assert Outbox(tmp_path / "o.sqlite", 100).stored_bytes() == counted


def test_outbox_max_bytes_defaults_to_1_gib_and_must_be_positive() -> None:
    base = {"device_id": "c", "bundle": {"path": "b", "public_key": "k"}, "source": {"kind": "images", "uri": "."}}
    assert parse_agent_config(base).outbox.max_bytes == 1 << 30
    with pytest.raises(AgentConfigError, match=r"outbox\.max_bytes"):
        parse_agent_config(base | {"outbox": {"max_bytes": 0}})


# --- space given back --------------------------------------------------------------------------------------


def test_a_drained_outbox_gives_its_space_back_and_a_busy_one_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, 1000)
    box.put([row(f"s-{i}", bytes(200_000)) for i in range(30)])
    full = file_bytes(path)
    box.ack(["s-0"])  # a steady stream: the freed pages are reused, nothing is moved
    assert file_bytes(path) >= full
    box.ack([f"s-{i}" for i in range(1, 30)])
    assert file_bytes(path) < 500_000  # at once, not at close
    box.close()


def test_an_outbox_without_auto_vacuum_keeps_working_and_is_converted_once_drained(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        db.executemany("INSERT INTO samples (sample_id, batch_id, created, frame_index, m, deadline, payload, logits,"
                       " meta) VALUES (?, 'b', 1, 0, 3, 2, ?, x'', '{}')",
                       [(f"s-{i}", bytes(200_000)) for i in range(10)])
    db.close()
    monkeypatch.setattr(outbox_module, "CONVERT_MAX_BYTES", 1_000_000)  # 2 MB stored: too much to copy at open
    box = Outbox(path, 100)
    assert [s.sample_id for s in box.restorable()] == [f"s-{i}" for i in range(10)]
    assert box.stored_bytes() == 10 * 200_002 and box.put([row("new", bytes(200_000))]).stored == ("new",)
    box.ack([f"s-{i}" for i in range(10)] + ["new"])
    box.close()
    assert file_bytes(path) > 2_000_000  # left as it was: its free pages wait for new samples
    box = Outbox(path, 100)  # drained: converted at this open
    assert box._db.execute("PRAGMA auto_vacuum").fetchone() == (2,) and file_bytes(path) < 200_000
    box.close()


# --- resend scan -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("old_file", [False, True])
def test_listing_samples_reads_a_narrow_index_not_the_image_pages(tmp_path: Path, old_file: bool) -> None:
    path = tmp_path / "o.sqlite"
    if old_file:
        with sqlite3.connect(path) as db:
            db.execute(OLD_SCHEMA)
        db.close()
    box = Outbox(path, 100)
    box.put([row(f"s-{i}") for i in range(3)])
    plan = " ".join(str(r) for r in box._db.execute("EXPLAIN QUERY PLAN SELECT sample_id, batch_id FROM samples "
                                                    "ORDER BY seq"))
    assert "COVERING INDEX samples_scan" in plan and box.index() == [(f"s-{i}", "b-1") for i in range(3)]
    box.close()


def test_the_resend_scan_reads_nothing_while_the_broker_is_away(make_agent) -> None:
    agent = make_agent(hub={"url": f"mqtt://127.0.0.1:{free_port()}"})
    agent.outbox.put([row(f"s-{i}", bytes(10_000)) for i in range(10)])
    read: list[str] = []
    agent.outbox.index = lambda: read.append("index") or []  # type: ignore[method-assign]
    agent.outbox.rows = lambda ids: read.append("rows") or []  # type: ignore[method-assign]
    assert not agent.transport.accepting()  # never connected
    agent._resend(time.monotonic())
    assert read == []


def test_a_due_batch_reads_no_image_while_the_broker_is_away(make_agent) -> None:
    agent = make_agent(hub={"url": f"mqtt://127.0.0.1:{free_port()}"}, gate={"tau": 1.0})
    pending = agent.process_frame(frame(0))
    read: list[str] = []
    agent.outbox.get = lambda sample_id: read.append(sample_id)  # type: ignore[method-assign,func-returns-value]
    agent._flush_due(time.monotonic() + 3600)
    assert read == [] and agent.outbox.index() == [(pending.sample_id, agent.outbox.pending()[0].batch_id)]
    assert agent.batcher.current_batch_id() != agent.outbox.pending()[0].batch_id  # the resend scan's, later


def test_a_grpc_link_accepts_while_its_queue_has_room(make_agent) -> None:
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"})
    transport = agent.transport
    assert transport.accepting()  # a call is what wakes the channel: not gated on its state
    transport._queued = transport.MAX_QUEUED
    assert not transport.accepting()
    transport._queued = 0
    transport.stop()
    assert not transport.accepting()


# --- samples the bound dropped -----------------------------------------------------------------------------


def test_samples_the_bound_dropped_are_forgotten_refunded_and_get_their_final_result(make_agent,
                                                                                     tmp_path: Path) -> None:
    """They stayed in `_waiting` (and `waiting_for_people`) for the whole run with their labour reserved."""
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"}, gate={"tau": 1.0},
                       outbox={"path": str(tmp_path / "outbox.sqlite"), "max_samples": 5})
    seen: list[Result] = []
    agent.sinks.append(CallbackSink(seen.append))
    first = [agent.process_frame(frame(i)) for i in range(20)]
    kept = {r.sample_id for r in agent.outbox.pending()}
    assert len(kept) == 5 and set(agent._waiting) == kept
    assert agent.telemetry.snapshot()["waiting_for_people"] == 5 and agent.outbox.dropped() == 15
    assert agent.labour.spent == pytest.approx(sum(w.labour for w in agent._waiting.values()))
    final = [r for r in seen if r.status is ResultStatus.TIMEOUT]
    assert sorted(r.sample_id for r in final) == sorted(r.sample_id for r in first if r.sample_id not in kept)
    assert all("dropped from the full outbox" in r.detail for r in final)
    dropped = final[0].sample_id
    agent._on_reply(hub_pb2.SampleReply(sample_id=dropped, status=hub_pb2.REPLY_STATUS_EXPIRED))
    assert agent.telemetry.count("duplicate_replies") == 1 and "replies" not in agent.telemetry.problems


def test_a_dropped_sample_whose_patience_ran_out_gets_no_second_final_result(make_agent, tmp_path: Path) -> None:
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"}, gate={"tau": 1.0},
                       outbox={"path": str(tmp_path / "outbox.sqlite"), "max_samples": 1})
    seen: list[Result] = []
    agent.sinks.append(CallbackSink(seen.append))
    old = agent.process_frame(frame(0))
    agent._expire(time.monotonic() + 3600)  # its timeout is reported
    agent.process_frame(frame(1))  # drops it
    assert [r.status for r in seen if r.sample_id == old.sample_id] == [ResultStatus.PENDING, ResultStatus.TIMEOUT]
    assert old.sample_id not in agent._waiting and len(agent._waiting) == 1
