"""The agent's delivery (issue 17), null engine, no hub. Exactly-once results across a crash: a reply's final result
is journalled as its sample leaves the outbox, so a restart re-offers it only to sinks that do not hold it; a
patience timeout is marked before it is reported, so the reply after a restart is `late`, not a second final
answer. Asking again is bounded: only the oldest RESEND_WINDOW samples already asked are asked again (seen through
a real Mosquitto, with the hub away)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.clock import StreamClock
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.outbox import Outbox, OutboxRow
from hgen.edge_agent.resend import RESEND_WINDOW
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks.jsonl import JsonlSink, JsonlSinkConfig
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.edge_agent.transports import ConnectionState
from hgen.hub.broker_acl import device_topics
from hgen.hub.testing.attacker import MqttProbe
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.services import HUB_USER, Broker, wait_until
from hgen.protos import hub_pb2
from hgen.protos.mqtt import topic

DEVICE, PREFIX = "cam-1", "hgen/v1"


def pending(sample_id: str) -> Result:
    return Result(0, sample_id, 0.0, ResultStatus.PENDING, "people", label=3, model_label=3, confidence=0.4)


def row(sample_id: str, created: float) -> OutboxRow:
    meta = {"result": pending(sample_id).to_dict(), "kind": "cnn", "temperature": 1.0, "lambda": 0.1,
            "shape": [10], "size": [28, 28]}
    return OutboxRow(sample_id, "b-1", created, 0, 3, created + 600,
                     hub_pb2.Sample(sample_id=sample_id).SerializeToString(), np.zeros(10, np.float32).tobytes(),
                     json.dumps(meta))


def lines(path: Path) -> list[tuple[str, str]]:
    return [(r["sample_id"], r["status"]) for r in map(json.loads, path.read_text().splitlines())]


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator:
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys)
    agents: list[Agent] = []

    def make(hub: dict | None = None) -> Agent:
        config = parse_agent_config({
            "device_id": DEVICE, "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
            "source": {"kind": "images", "uri": str(tmp_path)}, "batching": {"patience_s": 30},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")}, "hub": hub or {},
            "sinks": [{"kind": "jsonl", "path": str(tmp_path / "results.jsonl")}]})
        agents.append(Agent(config))
        return agents[-1]

    yield make
    for agent in agents:
        agent.stop()


def test_settle_moves_a_sample_into_the_journal_in_one_step(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", 10)
    outbox.put([row("a", 1.0), row("b", 1.0)])
    assert outbox.settle("a", '{"x": 1}') and not outbox.settle("a", '{"x": 2}')  # a duplicate reply
    assert outbox.depth() == 1 and outbox.unemitted() == [("a", '{"x": 1}')]
    outbox.emitted("a")
    assert outbox.unemitted() == []
    outbox.mark_timed_out(["b"])
    assert outbox.get("b").timed_out == 1


def test_an_outbox_from_an_older_agent_gains_the_timeout_mark(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE samples (seq INTEGER PRIMARY KEY AUTOINCREMENT, sample_id TEXT NOT NULL UNIQUE,"
                   " batch_id TEXT NOT NULL, created REAL NOT NULL, frame_index INTEGER NOT NULL, m INTEGER NOT NULL,"
                   " deadline REAL NOT NULL, payload BLOB NOT NULL, logits BLOB NOT NULL, meta TEXT NOT NULL)")
        db.execute("INSERT INTO samples (sample_id, batch_id, created, frame_index, m, deadline, payload, logits,"
                   " meta) VALUES ('old', 'b', 1, 0, 3, 2, x'', x'', '{}')")
    assert Outbox(path, 10).get("old").timed_out == 0


def test_jsonl_sink_knows_its_tail_and_ends_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    fused = Result(1, "s-1", 0.0, ResultStatus.FUSED, "people", label=7)
    path.write_text(fused.to_json() + "\n" + '{"sample_id": "s-2", "sta')  # killed mid-line
    sink = JsonlSink(JsonlSinkConfig(kind="jsonl", path=path))
    assert sink.holds(fused) and not sink.holds(Result(1, "s-1", 0.0, ResultStatus.LATE, "people"))
    sink.emit(Result(2, "s-3", 0.0, ResultStatus.MODEL, "confident", label=1))
    sink.close()
    assert path.read_text().splitlines()[-1].startswith('{"frame_index":2')


def test_a_restart_emits_each_journalled_result_once(tmp_path: Path, make_agent) -> None:
    first = make_agent()
    first.outbox.put([row("held", first.clock.time()), row("missed", first.clock.time())])
    for sample_id in ("held", "missed"):
        fused = Result(0, sample_id, 0.0, ResultStatus.FUSED, "people", label=5)
        first.outbox.settle(sample_id, fused.to_json())  # journalled ...
        if sample_id == "held":
            first._emit(fused)  # ... and written, then SIGKILL before `emitted`
    first.stop()
    second = make_agent()
    second._restore()
    assert lines(tmp_path / "results.jsonl") == [("held", "fused"), ("missed", "fused")]
    assert second.outbox.unemitted() == [] and second.outbox.depth() == 0
    second._on_reply(hub_pb2.SampleReply(sample_id="held", status=hub_pb2.REPLY_STATUS_ANSWERED))
    assert second.telemetry.count("duplicate_replies") == 1 and len(lines(tmp_path / "results.jsonl")) == 2


def test_a_timeout_before_the_crash_makes_the_reply_after_it_late(tmp_path: Path, make_agent) -> None:
    first = make_agent()
    first.outbox.put([row("slow", first.clock.time())])
    first._restore()
    first._expire(first.clock.monotonic() + 31)  # patience ran out: marked, then reported
    first.stop()
    second = make_agent()
    second._restore()
    assert second._waiting["slow"].timed_out
    answers = [hub_pb2.Answer(annotator_id=f"p{i}", class_id=2) for i in range(3)]
    second._on_reply(hub_pb2.SampleReply(sample_id="slow", status=hub_pb2.REPLY_STATUS_ANSWERED, answers=answers))
    assert lines(tmp_path / "results.jsonl") == [("slow", "timeout"), ("slow", "late")]


def test_patience_left_after_a_restart_counts_from_escalation(make_agent) -> None:
    agent = make_agent()
    agent.outbox.put([row("old", agent.clock.time() - 100), row("new", agent.clock.time())])
    agent._restore()
    now = agent.clock.monotonic()
    assert agent._waiting["old"].patience_at <= now < agent._waiting["new"].patience_at


def test_a_stream_clock_runs_at_the_stream_rate_and_never_goes_back() -> None:
    clock = StreamClock()
    clock.advance_to(1800.0)  # 30 minutes of frames played in a moment
    later = clock.monotonic()
    assert clock.elapsed() >= 1800.0
    clock.advance_to(10.0)
    assert clock.monotonic() >= later


class HubAway:
    """The hub's account on the broker, reading what the device asks and never answering (a hub that is down; the
    broker takes every ask, as it queues them for the hub's session)."""

    def __init__(self, broker: Broker) -> None:
        assert broker.access is not None
        self.topic = topic(PREFIX, DEVICE, "samples")
        self.probe = MqttProbe(broker.host, broker.port, HUB_USER, broker.access.hub_password, "hub-away")
        self.probe.subscribe(self.topic)

    def asked(self) -> list[str]:
        with self.probe.cond:
            return [s.sample_id for m in self.probe.messages
                    for s in hub_pb2.AnnotationRequest.FromString(m.payload).samples]

    def take(self, agent: Agent) -> list[str]:
        """The asks of the pass just made, once all are in: the broker holds them once the agent has nothing in
        flight, and forwards them here before its SUBACK to a later subscribe on this connection."""
        assert wait_until(lambda: not agent.transport.in_flight()), "the broker never acknowledged the asks"
        self.probe.subscribe(self.topic)
        asked = self.asked()
        with self.probe.cond:
            self.probe.messages.clear()
        return asked


def test_a_long_outage_asks_again_only_about_the_oldest_window(make_agent, broker: Broker) -> None:  # noqa: F811
    """Over a real broker with the hub away: every first ask goes, then only the oldest RESEND_WINDOW are asked
    again, and once the hub answers the oldest, the window slides to the next ones."""
    device_acl = [line.removeprefix("topic ") for line in device_topics(PREFIX, DEVICE)]
    agent = make_agent({"url": broker.url, "secret": broker.add_account(DEVICE, device_acl), "watch_updates": False})
    hub = HubAway(broker)
    try:
        agent.transport.start()
        assert wait_until(lambda: agent.transport.state is ConnectionState.CONNECTED), "the agent never connected"
        ids = [f"s{i:04d}" for i in range(RESEND_WINDOW + 100)]
        agent.outbox.put([row(sample_id, 0.0) for sample_id in ids])
        agent._resend(0.0)
        assert hub.take(agent) == ids  # first asks all go
        agent._resend(3600.0)  # an hour later nothing was answered
        assert hub.take(agent) == ids[:RESEND_WINDOW]
        agent.outbox.ack(ids[:100])  # the hub is back and answered the oldest
        agent._resend(7200.0)
        assert hub.take(agent) == ids[100:]
    finally:
        hub.probe.close()
