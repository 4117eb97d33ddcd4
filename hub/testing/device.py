"""Device-side clients for tests and benchmarks: they speak hgen.v1 over gRPC or MQTT like an edge agent.

`ReplyLog` records every reply received; a sample "duplicated" means two different reply ids for it (the hub
made two replies), whereas the same reply id received twice is at-least-once redelivery and is tolerated.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import paho.mqtt.client as mqtt

from hgen.hub.transports.mqtt import QOS, session_properties, topic
from hgen.protos import hub_pb2, hub_pb2_grpc


class ReplyLog:
    """Thread-safe record of replies, with an event per expected count."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.reply_ids: dict[str, set[str]] = defaultdict(set)
        self.first_at: dict[str, float] = {}
        self.statuses: dict[str, int] = {}
        self.labels: dict[str, hub_pb2.SampleReply] = {}

    def add(self, reply: hub_pb2.SampleReply) -> None:
        with self._cond:
            self.reply_ids[reply.sample_id].add(reply.reply_id)
            self.first_at.setdefault(reply.sample_id, time.perf_counter())
            self.statuses[reply.sample_id] = reply.status
            self.labels[reply.sample_id] = reply
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self.reply_ids)

    def wait_for(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.reply_ids) >= n, timeout)

    def missing(self, sample_ids: Iterable[str]) -> list[str]:
        with self._cond:
            return [s for s in sample_ids if s not in self.reply_ids]

    def duplicated(self) -> int:
        with self._cond:
            return sum(1 for ids in self.reply_ids.values() if len(ids) > 1)


def enroll(app: Any, *device_ids: str, target: str | None = None) -> dict[str, Any]:
    """Issue credentials through the hub's own API (as `hgen-hub add-device` does): device id -> IssuedCredential."""
    from hgen.hub.broker_acl import device_registry

    registry = device_registry(app.config, app.service.kb)
    return {device: registry.add(device, target) for device in device_ids}


def grpc_hub(db: Path, devices: Sequence[str], **grpc_settings: Any) -> tuple[Any, dict[str, Any]]:
    """A started hub with only gRPC, on a free loopback port, and `devices` enrolled: (app, device -> credential)."""
    from hgen.hub.app import HubApp
    from hgen.hub.config import parse_hub_config

    app = HubApp(parse_hub_config({"devices": list(devices), "knowledge_base": {"url": f"sqlite:///{db}"},
                                   "grpc": {"port": 0, **grpc_settings}})).start()
    return app, enroll(app, *devices)


def grpc_target(app: Any) -> str:
    """host:port of a started hub's gRPC server."""
    from hgen.hub.transports.grpc_server import GrpcTransport

    return f"127.0.0.1:{app.transport(GrpcTransport).port}"


class GrpcDevice:
    """Submits a batch and reads the reply stream; resubmits what is missing when the stream breaks.
    `token` is the device's bearer token (`IssuedCredential.bearer`), sent on every call."""

    def __init__(self, target: str, log: ReplyLog, call_timeout_s: float = 120.0, token: str | None = None) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 8 << 20)])
        self.stub = hub_pb2_grpc.AnnotationHubStub(self.channel)
        self.log = log
        self.call_timeout_s = call_timeout_s
        self.resubmissions = 0  # streams that ended before all their replies (e.g. a hub restart)

    def submit_until_replied(self, request: hub_pb2.AnnotationRequest, attempts: int = 10) -> None:
        """At-least-once: keep resubmitting the unreplied samples (same ids) until every one has a reply."""
        pending = request
        for _ in range(attempts):
            try:
                for reply in self.stub.Submit(pending, timeout=self.call_timeout_s, wait_for_ready=True,
                                              metadata=self.metadata):
                    self.log.add(reply)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            missing = set(self.log.missing(s.sample_id for s in request.samples))
            if not missing:
                return
            self.resubmissions += 1
            pending = hub_pb2.AnnotationRequest()
            pending.CopyFrom(request)
            del pending.samples[:]
            pending.samples.extend(s for s in request.samples if s.sample_id in missing)
        raise TimeoutError(f"{len(missing)} samples still without a reply after {attempts} attempts")

    def close(self) -> None:
        self.channel.close()


class MqttDevice:
    """Publishes requests on `<prefix>/<device>/samples`, collects `<prefix>/<device>/replies`; `password` is the
    device's secret (the user name is its id)."""

    def __init__(self, host: str, port: int, device_id: str, log: ReplyLog, prefix: str = "hgen/v1",
                 password: str | None = None) -> None:
        self.device_id = device_id
        self.prefix = prefix
        self.log = log
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{device_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(100)
        if password is not None:
            self.client.username_pw_set(device_id, password)
        will = hub_pb2.DeviceStatus(device_id=device_id, online=False).SerializeToString()
        self.client.will_set(topic(prefix, device_id, "status"), will, QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30, clean_start=False, properties=session_properties(3600))
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise TimeoutError("device did not get SUBACK from the broker")

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        if not reason_code.is_failure:
            client.subscribe(topic(self.prefix, self.device_id, "replies"), QOS)

    def _on_message(self, _client, _userdata, message) -> None:  # type: ignore[no-untyped-def]
        self.log.add(hub_pb2.SampleReply.FromString(message.payload))

    def publish(self, payload: bytes, kind: str = "samples") -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic(self.prefix, self.device_id, kind), payload, QOS)

    def submit(self, requests: Sequence[hub_pb2.AnnotationRequest], timeout: float = 30.0) -> None:
        """Publish and wait for each PUBACK: the broker holds them from here on."""
        handles = [self.publish(r.SerializeToString()) for r in requests]
        for handle in handles:
            handle.wait_for_publish(timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
