"""An attacker's MQTT client for the device-authentication tests and the security benchmark: it records the
broker's answers (CONNACK, SUBACK, PUBACK reason codes) and every message it manages to read."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from hgen.protos.mqtt import QOS

NOT_AUTHORIZED = 135  # MQTT v5 reason code, in CONNACK and PUBACK


class MqttProbe:
    """One connection attempt (no automatic retries worth waiting for), then subscribe / publish on demand."""

    def __init__(self, host: str, port: int, username: str | None, password: str | None, client_id: str) -> None:
        self.cond = threading.Condition()
        self.connack: list[int] = []
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._add(self.connack, rc.value)
        self.client.on_message = lambda _c, _u, message: self._add(self.messages, message)
        self.client.reconnect_delay_set(60, 60)  # one attempt is what we look at
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.wait(lambda: self.connack, 10):
            raise TimeoutError("no CONNACK from the broker")

    def _add(self, target: list, item: Any) -> None:
        with self.cond:
            target.append(item)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], Any], timeout: float) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(predicate, timeout))

    @property
    def accepted(self) -> bool:
        return bool(self.connack) and self.connack[0] == 0

    def subscribe(self, *topics: str) -> list[int]:
        codes: list[list[int]] = []
        self.client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._add(codes, [rc.value for rc in rcs])
        self.client.subscribe([(t, QOS) for t in topics])
        if not self.wait(lambda: codes, 10):
            raise TimeoutError("no SUBACK from the broker")
        return codes[0]

    def publish(self, topic_name: str, payload: bytes, retain: bool = False) -> int:
        """The PUBACK reason code (0: the broker took it, 135: not authorised)."""
        codes: list[int] = []
        self.client.on_publish = lambda _c, _u, _m, rc, _p: self._add(codes, rc.value)
        self.client.publish(topic_name, payload, QOS, retain=retain).wait_for_publish(10)
        if not self.wait(lambda: codes, 10):
            raise TimeoutError("no PUBACK from the broker")
        return codes[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
