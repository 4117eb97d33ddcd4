"""agent.yaml's `sinks`: each sink's module holds its typed config, the items are told apart by `kind`, and a
mistake is named by its key path (before, one flat config took every kind's keys and ignored the other kinds')."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from hgen.edge_agent.config import load_agent_config, parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.sinks import SINKS, SinkConfig, open_sinks

BASE = {"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k.pem"}, "source": {"kind": "video", "uri": "v"}}


def test_the_config_union_names_every_registered_sink() -> None:
    kinds = {get_args(model.model_fields["kind"].annotation)[0] for model in get_args(get_args(SinkConfig)[0])}
    assert kinds == set(SINKS.names()) == {"jsonl", "mqtt", "http"}


@pytest.mark.parametrize("sink, message", [
    ({"kind": "jsonl"}, r"sinks\.0\.jsonl\.path: Field required"),
    ({"kind": "mqtt", "url": "mqtt://h:1883", "topic": "t", "path": "r.jsonl"}, r"sinks\.0\.mqtt\.path: unknown key"),
    ({"kind": "mqtt", "url": "mqtts://h:8883", "topic": "t"}, r"sinks\.0\.mqtt\.url: String should match"),
    ({"kind": "kafka"}, r"sinks\.0: Input tag 'kafka' .* expected tags: 'jsonl', 'mqtt', 'http'"),
    ({"path": "r.jsonl"}, r"sinks\.0: Unable to extract tag using discriminator 'kind'"),
])
def test_a_wrong_sink_is_named_by_its_key_path(sink: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        parse_agent_config(BASE | {"sinks": [sink]})


def test_a_jsonl_sink_s_relative_path_is_the_config_file_s_folder(tmp_path: Path) -> None:
    folder = tmp_path / "kit"
    folder.mkdir()
    (folder / "agent.yaml").write_text(
        "device_id: cam-1\nbundle: {path: b, public_key: k.pem}\nsource: {kind: video, uri: v.mp4}\n"
        "sinks:\n  - {kind: jsonl, path: out/results.jsonl, updates_only: true}\n"
        "  - {kind: mqtt, url: 'mqtt://127.0.0.1:1', topic: results}\n")
    config = load_agent_config(folder / "agent.yaml")
    jsonl, mqtt = config.sinks
    assert jsonl.path == folder / "out" / "results.jsonl" and jsonl.updates_only
    assert mqtt.topic == "results" and not mqtt.updates_only
    (sink,) = open_sinks([jsonl])
    try:
        assert sink.updates_only and (folder / "out" / "results.jsonl").is_file()
    finally:
        sink.close()
