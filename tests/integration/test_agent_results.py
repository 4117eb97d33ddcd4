"""Where results go and what a late reply gives, with real parts: a real hub on loopback gRPC with the simulated
crowd (simulated people, labelled so) answering through the annotator API, a real Mosquitto for the `mqtt`
result sink, and the `null` engine as the model (no ML package loaded).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import AgentConfig, parse_agent_config
from hgen.edge_agent.testing import ResultCollector, RunningHub, start_hub, write_video
from hgen.hub.testing.fixtures import broker  # noqa: F401  (pytest fixture: a real Mosquitto)

if TYPE_CHECKING:
    from hgen.edge_agent.testing import TestKeys  # not imported at run time: pytest would try to collect it

DEVICE = "cam-1"
FRAMES = 40
TOPIC = f"results/{DEVICE}"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "noise.avi", FRAMES)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningHub]:
    running = start_hub(tmp_path / "hub.db", [DEVICE], answer="second")
    yield running
    running.stop()


def agent_config(tmp: Path, bundle: Path, keys: TestKeys, video: Path, hub_url: str, secret: str,
                 **sections: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "device_id": DEVICE,
        "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
        "source": {"kind": "video", "uri": str(video)},
        "gate": {"tau": 0.2, "audit_share": 0.0},
        "batching": {"size": 8, "max_wait_s": 0.2, "patience_s": 60},
        "hub": {"url": hub_url, "resend_after_s": 1.0, "secret": secret},
        "outbox": {"path": str(tmp / "outbox.sqlite")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_agent_config(data)


class TopicReader:
    """A plain MQTT subscriber, subscribed (SUBACK received) before the agent starts."""

    def __init__(self, port: int, topic: str, username: str, password: str) -> None:
        self.cond = threading.Condition()
        self.messages: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK from the broker"

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        with self.cond:
            self.messages.append(json.loads(message.payload))
            self.cond.notify_all()

    def wait_count(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.messages) >= count, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_sink_publishes_every_result_as_json(tmp_path, bundle, keys, video, broker, hub) -> None:  # noqa: F811
    """First results (model / pending) and the fused updates all arrive on the sink topic, equal to what the
    agent emitted, including those emitted just before the agent stops (the sink flushes on close)."""
    reader = TopicReader(broker.port, TOPIC, "dashboard", broker.add_account("dashboard", [f"read {TOPIC}"]))
    collector = ResultCollector()
    sink = {"kind": "mqtt", "url": broker.url, "topic": TOPIC, "username": "sink",
            "password": broker.add_account("sink", [f"write {TOPIC}"])}
    config = agent_config(tmp_path, bundle, keys, video, hub.grpc_url, hub.secret(DEVICE), sinks=[sink])
    try:
        with Agent(config, callbacks=[collector]) as agent:
            assert agent.wait(30) and agent.wait_settled(30)
        emitted = len(collector.results)
        assert reader.wait_count(emitted, 30), f"{len(reader.messages)} of {emitted} results on {TOPIC}"
    finally:
        reader.close()
    key = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
    assert Counter(key(m) for m in reader.messages) == Counter(key(r.to_dict()) for r in collector.results)
    statuses = Counter(m["status"] for m in reader.messages)
    assert statuses["model"] + statuses["pending"] == FRAMES
    assert statuses["pending"] > 0 and statuses["fused"] == statuses["pending"], statuses
    fused = [m for m in reader.messages if m["status"] == "fused"]
    assert all(m["final"] and len(m["answers"]) == 3 for m in fused)


def test_a_reply_after_patience_gives_a_late_update_with_the_answers(tmp_path, bundle, keys, video, hub) -> None:
    """Nobody answers within patience, so the model's answer stands (`timeout`, final); when people answer
    later each sample gets one `late` result carrying their answers, with the model's label unchanged."""
    hub.pause_crowd()
    collector = ResultCollector()
    config = agent_config(tmp_path, bundle, keys, video, hub.grpc_url, hub.secret(DEVICE), batching={"patience_s": 0.3})
    with Agent(config, callbacks=[collector]) as agent:
        assert agent.wait(30) and agent.wait_settled(30)
        pending = {r.sample_id: r for r in collector.with_status("pending")}
        assert pending and {r.sample_id for r in collector.with_status("timeout")} == set(pending)
        hub.resume_crowd()
        assert agent.wait_outbox_empty(60)
        assert collector.wait_for(lambda rs: sum(r.status.value == "late" for r in rs) == len(pending), 10)
        snap = agent.telemetry.snapshot()
    late = {r.sample_id: r for r in collector.with_status("late")}
    assert set(late) == set(pending) and snap["late_replies"] == len(pending) and snap["fused"] == 0
    for sample_id, result in late.items():
        before = pending[sample_id]
        assert result.final and result.label == before.label == result.model_label
        assert result.label_name == before.label_name and result.frame_index == before.frame_index
        assert len(result.answers) == 3 and set(result.answers) != {result.label}  # people named the runner-up
        assert "after patience" in result.detail
    assert not collector.with_status("fused")
