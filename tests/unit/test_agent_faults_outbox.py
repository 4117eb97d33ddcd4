"""The agent when its files fail (null engine, real SQLite, no hub): an outbox that cannot be written (another process
holds its lock past the busy timeout) refuses one sample and the stream goes on; a reply whose final result cannot
be committed is taken again later; a result a sink failed to take stays journalled for the restart; a timeout whose
mark cannot be written is reported by a later round; a damaged file or row does not keep the agent from starting;
and a path that cannot be created is a typed error naming the setting."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError, OutboxDamagedError, OutboxError, OutboxOwnerError
from hgen.edge_agent.outbox import Outbox, OutboxRow, open_outbox
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks import CallbackSink
from hgen.edge_agent.sinks.jsonl import JsonlSink, JsonlSinkConfig
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2

SHORT_BUSY_S = 0.05  # how long a write waits for another process's lock before it is refused


def row(sample_id: str) -> OutboxRow:
    pending = Result(0, sample_id, 0.0, ResultStatus.PENDING, "people", label=3, model_label=3, confidence=0.4)
    meta = {"result": pending.to_dict(), "kind": "cnn", "temperature": 1.0, "lambda": 0.1, "shape": [10],
            "size": [28, 28]}
    return OutboxRow(sample_id, "b-1", 0.0, 0, 3, 600.0, hub_pb2.Sample(sample_id=sample_id).SerializeToString(),
                     np.zeros(10, np.float32).tobytes(), json.dumps(meta))


def answered(sample_id: str) -> hub_pb2.SampleReply:
    answers = [hub_pb2.Answer(annotator_id=f"p{i}", class_id=2) for i in range(3)]
    return hub_pb2.SampleReply(sample_id=sample_id, status=hub_pb2.REPLY_STATUS_ANSWERED, answers=answers)


def frame(index: int) -> Frame:
    return Frame(index, np.random.default_rng(index).integers(0, 256, (28, 28), dtype=np.uint8), float(index))


class Locker:
    """Another process's connection holding the outbox's write lock, as a backup tool or a stuck writer would."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)

    def __enter__(self) -> Locker:
        self._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *_: object) -> None:
        self._db.execute("ROLLBACK")
        self._db.close()


class Failing(CallbackSink):
    """A sink whose destination is away (a full disk, a broker down) until `back` is set."""

    def __init__(self) -> None:
        self.back = False
        self.taken: list[Result] = []
        super().__init__(self._take)

    def _take(self, result: Result) -> None:
        if not self.back:
            raise OSError("destination away")
        self.taken.append(result)


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys)
    agents: list[Agent] = []

    def make(**extra: object) -> Agent:
        config = parse_agent_config({
            "device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
            "source": {"kind": "images", "uri": str(tmp_path)}, "batching": {"patience_s": 30},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "sinks": [{"kind": "jsonl", "path": str(tmp_path / "results.jsonl")}]} | extra)
        agents.append(Agent(config))
        return agents[-1]

    yield make
    for agent in agents:
        agent.stop()


def short_busy(agent: Agent) -> Outbox:
    """The agent's outbox reopened with a short busy timeout, so a held lock refuses a write at once."""
    agent.outbox.close()
    agent.outbox = Outbox(agent.config.outbox.path, agent.config.outbox.max_samples, busy_timeout_s=SHORT_BUSY_S)
    return agent.outbox


def test_a_locked_outbox_refuses_a_write_with_a_typed_error_and_works_again(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", 10, busy_timeout_s=SHORT_BUSY_S)
    with Locker(outbox.path), pytest.raises(OutboxError, match="o.sqlite"):
        outbox.put([row("a")])
    with Locker(outbox.path), pytest.raises(OutboxError, match="settle"):
        outbox.settle("a", "{}")
    assert outbox.put([row("a")]).stored == ("a",) and outbox.depth() == 1  # no transaction was left open


def test_a_sample_the_outbox_cannot_store_gets_the_models_answer_and_the_stream_goes_on(make_agent) -> None:
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"}, gate={"tau": 1.0})  # all to people
    short_busy(agent)
    seen: list[Result] = []
    agent.sinks.append(CallbackSink(seen.append))
    with Locker(agent.config.outbox.path):
        refused = agent.process_frame(frame(0))
    assert refused.status is ResultStatus.MODEL and seen == [refused]
    assert agent.labour.spent == 0.0 and agent.telemetry.count("outbox_dropped") == 1
    assert "cannot store samples" in agent.telemetry.problems["outbox"]
    assert agent._waiting == {} and agent.outbox.depth() == 0
    later = agent.process_frame(frame(1))  # the lock is gone: the next sample goes to people as usual
    assert later.status is ResultStatus.PENDING and agent.outbox.depth() == 1
    assert "outbox" not in agent.telemetry.problems and agent.labour.spent > 0


def test_a_reply_that_cannot_be_committed_is_taken_again_later(make_agent, tmp_path: Path) -> None:
    agent = make_agent()
    outbox = short_busy(agent)
    outbox.put([row("s-1")])
    agent._restore()
    with Locker(outbox.path), pytest.raises(OutboxError):
        agent._on_reply(answered("s-1"))
    assert "s-1" in agent._waiting and outbox.depth() == 1  # nothing was lost, nothing was counted
    assert agent.telemetry.count("replies") == 0 and agent.telemetry.count("fused") == 0
    agent._on_reply(answered("s-1"))  # the hub is asked again and answers again
    assert "s-1" not in agent._waiting and outbox.depth() == 0
    assert agent.telemetry.count("fused") == 1 and agent.telemetry.count("duplicate_replies") == 0
    statuses = [json.loads(line)["status"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert statuses == ["fused"]


def test_a_result_a_sink_failed_to_take_stays_journalled_and_a_restart_delivers_it(make_agent) -> None:
    first = make_agent()
    away = Failing()
    first.sinks.append(away)
    first.outbox.put([row("s-1")])
    first._restore()
    first._on_reply(answered("s-1"))
    assert first.telemetry.count("sink_errors") == 1
    assert [sample_id for sample_id, _ in first.outbox.unemitted()] == ["s-1"]  # kept for the sink that missed it
    first.stop()
    second = make_agent()
    back = Failing()
    back.back = True
    second.sinks.append(back)
    second._restore()
    assert [(r.sample_id, r.status) for r in back.taken] == [("s-1", ResultStatus.FUSED)]
    assert second.outbox.unemitted() == []


def test_a_recovered_result_a_sink_still_fails_to_take_stays_journalled(make_agent) -> None:
    first = make_agent()
    first.outbox.put([row("s-1")])
    first.outbox.settle("s-1", Result(0, "s-1", 0.0, ResultStatus.FUSED, "people", label=2).to_json())
    first.stop()  # killed before the sinks had it
    second = make_agent()
    second.sinks.append(Failing())
    second._restore()
    assert [sample_id for sample_id, _ in second.outbox.unemitted()] == ["s-1"]


def test_an_outbox_path_under_a_file_is_an_outbox_error_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")  # fails for root too, unlike a read-only folder
    with pytest.raises(OutboxError, match="outbox.path") as refused:
        Outbox(tmp_path / "plain" / "outbox.sqlite", 10)
    assert "plain" in str(refused.value)


def test_a_jsonl_sink_under_a_file_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(AgentConfigError, match=r"sinks\[kind=jsonl\]\.path .*plain"):
        JsonlSink(JsonlSinkConfig(kind="jsonl", path=tmp_path / "plain" / "results.jsonl"))


def test_an_agent_whose_outbox_cannot_be_made_refuses_to_start(make_agent, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(OutboxError, match="outbox.path"):
        make_agent(outbox={"path": str(tmp_path / "plain" / "outbox.sqlite")})


def test_another_devices_outbox_is_refused_and_left_as_it_is(make_agent, tmp_path: Path) -> None:
    """Two agents configured in one folder shared the default `outbox.sqlite`: the second restored the first one's
    samples, timed them out and reported them as its own. Now the file belongs to its first device."""
    first = make_agent()
    first.outbox.put([row("s-1")])
    first.stop()
    with pytest.raises(OutboxOwnerError, match=r"holds the samples of device 'cam-1', not 'cam-9'"):
        make_agent(device_id="cam-9")
    again = make_agent()  # its own device still finds its sample
    assert again.outbox.get("s-1") is not None


def test_an_outbox_from_before_owners_is_adopted(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.sqlite", 10).close()  # no device recorded
    Outbox(tmp_path / "o.sqlite", 10, device_id="cam-1").close()
    with pytest.raises(OutboxOwnerError):
        Outbox(tmp_path / "o.sqlite", 10, device_id="cam-2")


def test_a_timeout_whose_mark_cannot_be_written_is_reported_by_a_later_round(make_agent) -> None:
    """The sample was flagged timed out in memory before the mark was written: the write failing (file locked, card
    full) lost its `timeout` result for good, and the sinks kept `pending`."""
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"}, gate={"tau": 1.0})  # all to people
    outbox = short_busy(agent)
    seen: list[Result] = []
    agent.sinks.append(CallbackSink(seen.append))
    pending = agent.process_frame(frame(0))
    past_patience = agent.clock.monotonic() + 31
    with Locker(outbox.path), pytest.raises(OutboxError, match="mark samples timed out"):
        agent._expire(past_patience)
    assert [r.status for r in seen] == [ResultStatus.PENDING] and not agent.wait_settled(0)
    assert "mark samples timed out" in agent.telemetry.problems["outbox"]
    agent._expire(past_patience)  # the next housekeeping round, the file free again
    agent._expire(past_patience)
    assert [r.status for r in seen] == [ResultStatus.PENDING, ResultStatus.TIMEOUT] and agent.wait_settled(0)
    assert outbox.get(pending.sample_id).timed_out == 1 and agent.telemetry.count("timeouts") == 1
    assert "outbox" not in agent.telemetry.problems


def test_a_reply_taken_while_the_timeout_mark_is_written_is_final(make_agent) -> None:
    """The mark is written before the sample is flagged; a reply that takes the sample meanwhile gives the final
    result, and no `timeout` follows it."""
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"}, gate={"tau": 1.0})
    seen: list[Result] = []
    agent.sinks.append(CallbackSink(seen.append))
    pending = agent.process_frame(frame(0))
    mark = agent.outbox.mark_timed_out

    def mark_as_the_reply_arrives(sample_ids: list[str]) -> None:
        mark(sample_ids)
        agent._on_reply(answered(pending.sample_id))

    agent.outbox.mark_timed_out = mark_as_the_reply_arrives  # type: ignore[method-assign]
    agent._expire(agent.clock.monotonic() + 31)
    assert [r.status for r in seen] == [ResultStatus.PENDING, ResultStatus.FUSED]
    assert agent.telemetry.count("timeouts") == 0 and agent.wait_settled(0)


def test_a_reply_taken_while_the_timeout_is_emitted_is_reported_late_after_it(make_agent) -> None:
    """The sample was flagged timed out, and its reply came while housekeeping was still handing the `timeout` to
    the sinks: `late` reached them first, and consumers saw a final `timeout` after the answers."""
    agent = make_agent(hub={"url": f"grpc://127.0.0.1:{free_port()}"}, gate={"tau": 1.0})
    seen: list[ResultStatus] = []
    pending = agent.process_frame(frame(0))
    replier = threading.Thread(target=agent._on_reply, args=(answered(pending.sample_id),))

    def slow_sink(result: Result) -> None:
        if result.status is ResultStatus.TIMEOUT:  # the reply arrives now, on the transport's thread
            replier.start()
            deadline = time.monotonic() + 10
            while replier.is_alive() and not agent._changed._waiters:  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the reply neither finished nor waited"
                time.sleep(0.001)  # polls the reply thread's state; the order asserted does not depend on timing
        seen.append(result.status)

    agent.sinks.append(CallbackSink(slow_sink))
    agent._expire(agent.clock.monotonic() + 31)
    replier.join(10)
    assert not replier.is_alive()
    assert seen == [ResultStatus.TIMEOUT, ResultStatus.LATE]
    assert agent.telemetry.count("late_replies") == 1 and agent.wait_settled(0)


def damage_header(path: Path) -> bytes:
    """The first sector of the file lost, as on a damaged SD card; returns the damaged bytes."""
    data = bytearray(path.read_bytes())
    data[:100] = b"\x00" * 100
    path.write_bytes(bytes(data))
    return bytes(data)


def test_a_damaged_outbox_is_moved_aside_and_the_agent_starts_with_a_fresh_one(make_agent, tmp_path: Path,
                                                                                caplog) -> None:
    """A file that is not a database any more made every start fail (exit 1, the supervisor looping, no frames)."""
    first = make_agent()
    first.outbox.put([row("s-1")])
    first.stop()
    damaged = damage_header(tmp_path / "outbox.sqlite")
    with caplog.at_level(logging.ERROR, logger="hgen.edge_agent.outbox"):
        agent = make_agent()
    (aside,) = tmp_path.glob("outbox.sqlite.corrupt-*")
    assert re.fullmatch(r"outbox\.sqlite\.corrupt-\d{8}T\d{6}Z", aside.name) and aside.read_bytes() == damaged
    assert f"moved it aside to {aside}" in caplog.text and "file is not a database" in caplog.text
    assert str(aside) in agent.telemetry.problems["outbox_damaged"]
    assert agent.outbox.depth() == 0 and agent.process_frame(frame(0)).status is ResultStatus.MODEL
    agent._restore()
    again = make_agent()  # the fresh file is kept: nothing more is moved
    assert "outbox_damaged" not in again.telemetry.problems and len(list(tmp_path.glob("*.corrupt-*"))) == 1


def test_a_locked_or_another_devices_outbox_is_refused_not_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, 10, device_id="cam-1")
    outbox.put([row("s-1")])
    outbox.close()
    problems: list[str] = []
    with Locker(path), pytest.raises(OutboxError, match="database is locked") as locked:
        open_outbox(path, 10, device_id="cam-1", on_problem=problems.append, busy_timeout_s=SHORT_BUSY_S)
    assert not isinstance(locked.value, OutboxDamagedError)
    with pytest.raises(OutboxOwnerError):
        open_outbox(path, 10, device_id="cam-9", on_problem=problems.append)
    assert problems == [] and not list(tmp_path.glob("*.corrupt-*"))
    assert open_outbox(path, 10, device_id="cam-1", on_problem=problems.append).get("s-1") is not None


def test_damaged_stored_rows_are_dropped_and_counted_and_the_rest_restored(make_agent, tmp_path: Path,
                                                                          caplog) -> None:
    """One damaged row made `_restore` raise out of Agent.start at every restart."""
    agent = make_agent()
    bad_logits = OutboxRow(**{**row("s-3").__dict__, "logits": b"\x00" * 7})
    not_a_result = OutboxRow(**{**row("s-4").__dict__, "meta": json.dumps({"result": [], "kind": "cnn"})})
    agent.outbox.put([row("s-1"), OutboxRow(**{**row("s-2").__dict__, "meta": '{"result": {"fr'}), bad_logits,
                      not_a_result, row("s-5"), row("s-6")])
    db = sqlite3.connect(tmp_path / "outbox.sqlite", isolation_level=None)
    db.execute("UPDATE samples SET meta = CAST(X'7B22FF' AS TEXT) WHERE sample_id = 's-6'")  # not UTF-8
    db.close()
    with caplog.at_level(logging.ERROR):
        agent._restore()
    assert sorted(agent._waiting) == ["s-1", "s-5"] and agent.outbox.depth() == 2
    assert agent.outbox.dropped() == 4 and agent.telemetry.snapshot()["outbox_dropped"] == 4
    assert "4 damaged stored sample(s) dropped" in agent.telemetry.problems["outbox_damaged"]
    assert [r.message for r in caplog.records if "could not be decoded" in r.message] == [
        f"4 stored sample(s) in {tmp_path / 'outbox.sqlite'} could not be decoded (damaged) and were dropped"]
    agent.stop()
    again = make_agent()
    again._restore()
    assert sorted(again._waiting) == ["s-1", "s-5"] and "outbox_damaged" not in again.telemetry.problems


def test_a_damaged_settled_result_is_dropped_and_the_others_still_reach_the_sinks(make_agent, tmp_path: Path) -> None:
    """A settled result journalled before a crash whose text is damaged stopped every start (json.loads raised out
    of `_recover_settled`)."""
    agent = make_agent()
    agent.outbox.put([row("s-1"), row("s-2")])
    good = json.loads(row("s-1").meta)["result"]
    agent.outbox.settle("s-1", json.dumps({**good, "status": "fused"}))
    agent.outbox.settle("s-2", '{"sample_id": "s-2", "sta')
    agent.stop()
    again = make_agent()
    assert again._recover_settled() == 2
    assert again.outbox.unemitted() == []
    assert "s-2" in again.telemetry.problems["outbox_damaged"]
    again.stop()


def test_a_damaged_page_behind_an_intact_header_is_moved_aside_too(make_agent, tmp_path: Path) -> None:
    """The open succeeded and the first read, in `start`, raised: the agent did not start at any restart."""
    first = make_agent()
    first.outbox.put([row(f"s-{i}") for i in range(40)])
    first.stop()
    path = tmp_path / "outbox.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name='samples'").fetchone()
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as damaged:  # the samples table's root page, overwritten as a failing card might
        damaged.seek((root - 1) * size)
        damaged.write(bytes(range(256)) * (size // 256))
    cv2.imwrite(str(tmp_path / "f0.png"), np.zeros((28, 28), np.uint8))
    agent = make_agent()
    try:
        assert "moved aside" in agent.telemetry.problems["outbox_damaged"]
        agent.start()
        assert agent.outbox.depth() == 0 and list(tmp_path.glob("outbox.sqlite.corrupt-*"))
    finally:
        agent.stop()
