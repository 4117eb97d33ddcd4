"""`mqtt`: results as JSON on a topic (QoS 1) of any broker, e.g. for a local dashboard or Node-RED.

Results published before the broker answers are queued by paho and sent on connect; `close` waits (bounded) for
the last one to be acknowledged, so an agent that stops right after its final update does not lose it. The queue is
bounded (`max_queued`): while the broker is away for long, newer results are refused, each one raising
`SinkQueueFullError` (the agent counts it in `sink_errors` and goes on), instead of paho holding every result in
memory until the device runs out of it.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from pydantic import Field, SecretStr, field_validator

from hgen.edge_agent.errors import ResultDroppedError
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink, SinkSettings

FLUSH_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


class SinkQueueFullError(ResultDroppedError):
    """The broker has been away while `max_queued` results waited: this one is not kept."""


class MqttSinkConfig(SinkSettings):
    kind: Literal["mqtt"] = Field(title="Results as JSON on a topic of any broker (QoS 1)")
    url: str = Field(pattern=r"^mqtt://[^/]+/?$", title="mqtt://host:port of the broker (plain MQTT)")
    topic: str = Field(min_length=1, title="Topic to publish results on")
    username: str | None = Field(None, title="Account on that broker (brokers refuse anonymous clients)")
    password: SecretStr | None = Field(None, title="Password of username")
    max_queued: int = Field(1000, ge=1, title="Results kept in memory (unsent or unacknowledged) while the broker is "
                                              "away; newer ones are refused and counted in sink_errors (about 2 KB "
                                              "each)")

    @field_validator("topic")
    @classmethod
    def _publishable(cls, topic: str) -> str:
        """A topic paho refuses at every publish (a wildcard, NUL, over 65535 bytes) is refused here, by key: it was
        taken, and each result failed and was kept for re-delivery. Any script and spaces are fine (UTF-8)."""
        if "+" in topic or "#" in topic or "\0" in topic:
            raise ValueError(f"{topic!r}: a topic results are published on cannot hold the wildcards + or # (or NUL)")
        if len(topic.encode("utf-8")) > 65535:
            raise ValueError("a topic is at most 65535 bytes (UTF-8)")
        return topic


@SINKS.register("mqtt")
class MqttSink(Sink):
    def __init__(self, config: MqttSinkConfig) -> None:
        parts = urlsplit(config.url)
        self.topic = config.topic
        self.max_queued = config.max_queued
        self._lock = threading.Lock()
        self._last: mqtt.MQTTMessageInfo | None = None
        self._full = False  # refusing results: logged once when it starts and once when it ends
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_queued_messages_set(self.max_queued)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        if config.username is not None:
            password = config.password.get_secret_value() if config.password is not None else None
            self.client.username_pw_set(config.username, password)
        self.client.connect_async(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()

    def emit(self, result: Result) -> None:
        """Queue `result` for the broker without blocking; SinkQueueFullError when max_queued already wait."""
        info = self.client.publish(self.topic, result.to_json(), qos=1)
        refused = info.rc == mqtt.MQTT_ERR_QUEUE_SIZE
        with self._lock:
            if not refused:
                self._last = info  # `close` waits for the last one kept, not for a refused one
            changed, self._full = refused != self._full, refused
        if changed:
            self._log_change(refused)
        if refused:
            raise SinkQueueFullError(f"mqtt sink {self.topic}: {self.max_queued} results already wait "
                                     f"for the broker; result of sample {result.sample_id} not kept")

    def _log_change(self, refused: bool) -> None:
        """Once per outage, not once per frame: the count is `sink_errors`."""
        if refused:
            log.warning("mqtt sink %s: the broker has been away while its queue filled; refusing results "
                        "(counted in sink_errors)", self.topic)
        else:
            log.info("mqtt sink %s: queueing results again", self.topic)

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
