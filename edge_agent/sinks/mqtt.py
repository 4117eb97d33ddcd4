"""`mqtt`: results as JSON on a topic (QoS 1) of any broker, e.g. for a local dashboard or Node-RED."""

from __future__ import annotations

from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from hgen.edge_agent.config import SinkConfig
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink


@SINKS.register("mqtt")
class MqttSink(Sink):
    def __init__(self, config: SinkConfig) -> None:
        assert config.url is not None and config.topic is not None
        parts = urlsplit(config.url)
        self.topic = config.topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.connect_async(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def emit(self, result: Result) -> None:
        self.client.publish(self.topic, result.to_json(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
