"""MQTT uplink (paho-mqtt 2, MQTT v5): QoS 1, persistent session, last will, topics as in the README (Wire protocol).

`<prefix>/<device>/samples` out, `replies` and retained `updates` in, `status` out (retained; the last will
is `DeviceStatus{online:false}`).

Sending is a bounded, acknowledged stream: at most `WINDOW` sample messages wait for the broker's PUBACK at once
(paho re-sends those itself after a reconnect, so the agent must not queue them again); `send` refuses more and
the samples wait in the outbox. A PUBACK only says the broker took the message: a broker killed before it
persisted may still lose it, so the agent asks again (`resend_after_s`) until the hub's reply arrives.

The client id is the device id, the same as the broker's user name: a broker configured as shipped
(`use_username_as_clientid true` on the devices' listeners, hub/broker/mosquitto.conf.example) uses the user name
as the client id anyway, so the persistent session is the same whichever way the broker is set.

A PUBACK may reach paho's network thread before `send` learnt its message id ("early"); it is kept only while a
publish is in progress, and every publish (samples or status) settles its id afterwards, taking its early PUBACK,
so no early entry outlives its publish to be mistaken, after the packet ids wrap, for a later message's.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from hgen.edge_agent.config import HubConfig
from hgen.edge_agent.errors import SwapError
from hgen.edge_agent.transports.base import (
    CREDENTIAL_HINT,
    TRANSPORTS,
    ConnectionState,
    Endpoint,
    Transport,
    TransportCallbacks,
    TransportErrorCode,
    stamped,
)
from hgen.edge_agent.transports.grpc import bearer_token, fetch_from_url
from hgen.protos import hub_pb2
from hgen.protos.mqtt import QOS, session_properties, topic

log = logging.getLogger(__name__)
NOT_AUTHORISED = (0x86, 0x87, 4, 5)  # MQTT 5 bad user name or password, not authorised; MQTT 3.1.1's codes 4, 5
REFUSED_HINT = f"the broker refused this device: {CREDENTIAL_HINT}"
WINDOW = 32  # sample messages awaiting PUBACK at once (each a batch); below paho's in-flight limit of 100


def make_client(client_id: str, endpoint: Endpoint, config: HubConfig, device_id: str) -> mqtt.Client:
    """The broker knows the device by its id (the user name) and secret; its ACL limits it to its own topics."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if config.secret is not None:
        client.username_pw_set(device_id, config.secret.get_secret_value())
    client.max_inflight_messages_set(100)
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    if endpoint.tls and config.tls is not None:
        tls = config.tls
        tls.check_files()
        client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                       certfile=str(tls.cert_file) if tls.cert_file else None,
                       keyfile=str(tls.key_file) if tls.key_file else None)
    return client


def _queued(info: mqtt.MQTTMessageInfo | None) -> bool:
    """Paho took the message: sent, or (NO_CONN) sent after the reconnect."""
    return info is not None and info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)


@TRANSPORTS.register("mqtt")
class MqttTransport(Transport):
    via_broker = True

    def __init__(self, endpoint: Endpoint, config: HubConfig, device_id: str, callbacks: TransportCallbacks) -> None:
        super().__init__(endpoint, config, device_id, callbacks)
        self.topics = {kind: topic(config.prefix, device_id, kind) for kind in ("samples", "replies", "updates",
                                                                                 "status")}
        self.client = make_client(device_id, endpoint, config, device_id)
        will = stamped(hub_pb2.DeviceStatus(device_id=device_id, online=False)).SerializeToString()
        self.client.will_set(self.topics["status"], will, QOS, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._unacked: dict[int, frozenset[str]] = {}  # mid -> sample ids, until the broker's PUBACK
        self._acked_early: set[int] = set()  # PUBACKs that came while their publish was still in progress
        self._untracked: set[int] = set()  # mids of status messages, until their PUBACK
        self._publishing = 0  # publishes whose mid is not settled yet

    def start(self) -> None:
        self._set_state(ConnectionState.CONNECTING)
        self.client.connect_async(self.endpoint.host, self.endpoint.port, self.config.keepalive_s,
                                  clean_start=False, properties=session_properties(self.config.session_expiry_s))
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _userdata, flags, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            detail = str(reason_code) + (f" ({REFUSED_HINT})" if reason_code.value in NOT_AUTHORISED else "")
            if self.error is not TransportErrorCode.REFUSED:  # once per refusal, not at every reconnect
                log.warning("the broker at %s refused %s: %s", self.config.url, self.device_id, detail)
            self._set_state(ConnectionState.DISCONNECTED, TransportErrorCode.REFUSED, detail)
            return
        client.subscribe([(self.topics["replies"], QOS), (self.topics["updates"], QOS)])
        log.info("MQTT connected (session present: %s)", flags.session_present)
        self._set_state(ConnectionState.CONNECTED, TransportErrorCode.OK, f"session present {flags.session_present}")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        if self.state is not ConnectionState.CLOSED and self.error is not TransportErrorCode.REFUSED:
            # the refused CONNACK is followed by this disconnect ("Protocol error"): the refusal is the cause
            self._set_state(ConnectionState.DISCONNECTED, TransportErrorCode.UNREACHABLE, str(reason_code))

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        """A payload that does not decode is the hub link's protocol error; a decoded one the agent fails to take
        (its outbox failing) is the agent's: logged, the link stays healthy, and the sample is asked about again.
        Neither may kill paho's network thread."""
        if message.topic == self.topics["replies"]:
            handle, kind = self.callbacks.on_reply, hub_pb2.SampleReply
        elif message.topic == self.topics["updates"] and message.payload:
            handle, kind = self.callbacks.on_update, hub_pb2.ModelUpdate  # type: ignore[assignment]
        else:
            return
        try:
            decoded = kind.FromString(message.payload)
        except Exception as exc:  # protobuf's DecodeError, or anything a malformed payload raises
            log.warning("bad message on %s: %s", message.topic, exc)
            self.callbacks.on_state(self.state, TransportErrorCode.PROTOCOL, f"{message.topic}: {exc}")
            return
        try:
            handle(decoded)  # type: ignore[arg-type]
        except Exception:
            log.exception("message on %s not taken; its sample is asked about again later", message.topic)

    def send(self, request: hub_pb2.AnnotationRequest) -> bool:
        if self.state is not ConnectionState.CONNECTED:
            return False  # the outbox keeps it; the agent sends it once the link is back
        ids = frozenset(s.sample_id for s in request.samples)
        with self._lock:
            if len(self._unacked) >= WINDOW or ids & self._busy():
                return False
            self._unacked[-id(ids)] = ids  # reserved; paho's lock is never taken while ours is held
            self._publishing += 1
        info: mqtt.MQTTMessageInfo | None = None
        try:
            info = self.client.publish(self.topics["samples"], request.SerializeToString(), QOS)
        finally:
            with self._lock:
                del self._unacked[-id(ids)]
                self._publishing -= 1
                if info is not None:
                    self._settle(info, ids)
        return _queued(info)

    def _publish_status(self, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Retained status; its PUBACK marks nothing, but its mid is settled like a sample message's."""
        with self._lock:
            self._publishing += 1
        info: mqtt.MQTTMessageInfo | None = None
        try:
            info = self.client.publish(self.topics["status"], payload, QOS, retain=True)
            return info
        finally:
            with self._lock:
                self._publishing -= 1
                if info is not None:
                    self._settle(info, None)

    def _settle(self, info: mqtt.MQTTMessageInfo, ids: frozenset[str] | None) -> None:
        """Under the lock, once `publish` returned: unless its PUBACK already came, a queued sample message is
        awaited by its ids, a status by its mid alone. No early entry for the mid is left behind."""
        early = info.mid in self._acked_early
        self._acked_early.discard(info.mid)
        self._untracked.discard(info.mid)  # paho does not reuse a mid in flight: an old entry is dead
        if _queued(info) and not early:
            if ids is None:
                self._untracked.add(info.mid)
            else:
                self._unacked[info.mid] = ids

    def _on_publish(self, _client, _userdata, mid: int, _reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            if self._unacked.pop(mid, None) is not None:
                return
            if mid in self._untracked:
                self._untracked.discard(mid)
            elif self._publishing:
                self._acked_early.add(mid)  # PUBACK before its publisher settled the mid (`_settle` takes it)

    def _busy(self) -> frozenset[str]:
        return frozenset().union(*self._unacked.values())

    def in_flight(self) -> frozenset[str]:
        """Samples in a message paho still holds (it re-sends them itself after a reconnect)."""
        with self._lock:
            return self._busy()

    def accepting(self) -> bool:
        """Connected with room in the window: what `send` checks before it takes a message."""
        if self.state is not ConnectionState.CONNECTED:
            return False
        with self._lock:
            return len(self._unacked) < WINDOW

    def report_status(self, status: hub_pb2.DeviceStatus) -> None:
        if self.state is ConnectionState.CONNECTED:
            self._publish_status(stamped(status).SerializeToString())

    def fetch_bundle(self, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
        uri = notice.fetch_uri or self.config.bundle_url
        if not uri or not uri.startswith(("grpc://", "grpcs://")):
            raise SwapError(f"update {notice.version} has no grpc:// fetch_uri and hub.bundle_url is not set")
        return fetch_from_url(uri, notice, dest, self.config.tls, bearer_token(self.device_id, self.config))

    def stop(self) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        offline = stamped(hub_pb2.DeviceStatus(device_id=self.device_id, online=False)).SerializeToString()
        if self.state is ConnectionState.CONNECTED:
            try:
                self._publish_status(offline).wait_for_publish(2.0)
            except (RuntimeError, ValueError):  # connection lost meanwhile: the last will says the same
                pass
        self._set_state(ConnectionState.CLOSED)
        self.client.disconnect()
        self.client.loop_stop()
