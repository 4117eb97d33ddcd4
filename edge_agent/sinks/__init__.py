"""Where results go: `jsonl` file, `mqtt` topic, `http` webhook (from agent.yaml) and a Python callback (from code).

Each sink's module holds its key, its typed config and its code; `SinkConfig` is the union agent.yaml's `sinks`
items are validated against, told apart by `kind` (a test checks it names every registered sink).
"""

from typing import Annotated

from pydantic import Field

from hgen.edge_agent.sinks.base import SINKS, Sink, SinkSettings, close_sinks, open_sinks
from hgen.edge_agent.sinks.callback import CallbackSink
from hgen.edge_agent.sinks.http import HttpSinkConfig
from hgen.edge_agent.sinks.jsonl import JsonlSinkConfig
from hgen.edge_agent.sinks.mqtt import MqttSinkConfig

SinkConfig = Annotated[JsonlSinkConfig | MqttSinkConfig | HttpSinkConfig, Field(discriminator="kind")]

__all__ = ["SINKS", "CallbackSink", "HttpSinkConfig", "JsonlSinkConfig", "MqttSinkConfig", "Sink", "SinkConfig",
           "SinkSettings", "close_sinks", "open_sinks"]
