"""`mqtt`: results as JSON on a topic (QoS 1) of any broker, e.g. for a local dashboard or Node-RED.

Results published before the broker answers are queued by paho and sent on connect; `close` waits (bounded) for
the last one to be acknowledged, so an agent that stops right after its final update does not lose it.
"""

from __future__ import annotations

import threading
from typing import Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from pydantic import Field, SecretStr

from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink, SinkSettings

FLUSH_TIMEOUT_S = 5.0


class MqttSinkConfig(SinkSettings):
    kind: Literal["mqtt"] = Field(title="Results as JSON on a topic of any broker (QoS 1)")
    url: str = Field(pattern=r"^mqtt://[^/]+/?$", title="mqtt://host:port of the broker (plain MQTT)")
    topic: str = Field(min_length=1, title="Topic to publish results on")
    username: str | None = Field(None, title="Account on that broker (brokers refuse anonymous clients)")
    password: SecretStr | None = Field(None, title="Password of username")


@SINKS.register("mqtt")
class MqttSink(Sink):
    def __init__(self, config: MqttSinkConfig) -> None:
        parts = urlsplit(config.url)
        self.topic = config.topic
        self._lock = threading.Lock()
        self._last: mqtt.MQTTMessageInfo | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        if config.username is not None:
            password = config.password.get_secret_value() if config.password is not None else None
            self.client.username_pw_set(config.username, password)
        self.client.connect_async(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def emit(self, result: Result) -> None:
        info = self.client.publish(self.topic, result.to_json(), qos=1)
        with self._lock:
            self._last = info

    def close(self) -> None:
        with self._lock:
            last = self._last
        if last is not None:
            try:
                last.wait_for_publish(FLUSH_TIMEOUT_S)  # QoS 1 in order: the last acknowledged, all were sent
            except (RuntimeError, ValueError):  # never connected or queue full: nothing more to wait for
                pass
        self.client.disconnect()
        self.client.loop_stop()
