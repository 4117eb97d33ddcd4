"""MQTT transport (paho-mqtt 2.x, MQTT v5): QoS 1, persistent session, protobuf payloads.

Topics under a configurable prefix (see the README, Wire protocol): devices publish `<prefix>/<device>/samples`
(AnnotationRequest) and `<prefix>/<device>/status` (DeviceStatus, also their last will); the hub publishes
`<prefix>/<device>/replies` (SampleReply) and retained `<prefix>/<device>/updates` (ModelUpdate).

Every sample and status must name the device of its topic (the broker's ACL, written by hgen.hub.broker_acl,
lets only device X publish on `<prefix>/X/...`); with `access` set the hub owns that ACL, syncs it at start
and refuses messages from devices whose credential was revoked meanwhile.

A sample message is acknowledged (PUBACK) only once the knowledge base committed it, so a hub that dies
mid-message gets it again from the broker; the commit happens on an ingest worker, not on paho's network thread
(hgen.hub.transports.mqtt_ingest says why), with the broker's window bounded by MQTT v5 Receive Maximum. What the hub
holds unacknowledged is bounded even when the broker oversteps that window (Mosquitto before 2.0.13 does): beyond
64 messages or `mqtt.max_held_bytes`, the network thread reads nothing more until ingest catches up. At each
connect the hub asks for `$SYS/broker/version` (if its account may read it) and warns about such a broker. A
reply is marked delivered when the broker acknowledges it. That is a hint, not a guarantee: a broker killed before persisting loses
acknowledged messages, so a device still waiting asks again and the hub answers every re-sent sample from the
knowledge base, whatever it marked. Each reply is held by paho at most once (a reply already queued there is
not queued again), and after a (re)connect the unacknowledged backlog is re-published in pages, never more
than `REPLY_WINDOW` waiting for PUBACK at once.

Devices publish at QoS 1; a QoS 0 sample is dropped on arrival (`mqtt_qos0_dropped`): the broker's Receive Maximum
does not bound QoS 0, so one device's QoS 0 flood would otherwise queue without limit ahead of everyone's samples.
Status messages have their own, smaller cap (`max_status_bytes`, like gRPC's): a status is stored whole on the
device's row, which the operator page reads at every refresh; a larger one is refused before it is decoded
(`status_too_large`) and the stored status is left as it was.

A PUBACK may reach paho's network thread before the publishing thread learnt its message id ("early"); it is
kept only while a publish is in progress, and every publish (reply or update notice) settles its id afterwards,
taking its early PUBACK if there was one, so no early entry outlives its publish to be mistaken, after the packet
ids wrap, for the PUBACK of a later message.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hgen.hub.broker_acl import device_registry
from hgen.hub.transport_config import MqttConfig, MqttTlsConfig
from hgen.hub.devices import DeviceAuthError
from hgen.hub.kb.images import ImageWriteError
from hgen.hub.errors import BadInputError, HubError, MalformedMessageError, StatusTooLargeError, UnknownDeviceError
from hgen.hub.service import HubService
from hgen.hub.transports import HUB_TRANSPORTS
from hgen.hub.transports.agent_versions import AgentVersions
from hgen.hub.transports.base import AnnounceError, HubTransport
from hgen.hub.transports.mqtt_ingest import INGEST_WINDOW, IngestWorker, Received
from hgen.protos import hub_pb2
from hgen.protos.mqtt import QOS, session_properties, topic

log = logging.getLogger(__name__)
TRANSPORT = "mqtt"
REPLY_WINDOW = 90  # replies awaiting PUBACK during a re-publish (paho's in-flight limit is 100)
REDELIVER_PAGE = 500
ANSWER_AGAIN_S = 10.0  # a re-ask within this of the reply's last send is not answered (devices re-ask after >= 5 s)
SENT_KEPT = 100_000
ACK_FLUSH_S = 0.5
PUBACK_TIMEOUT_S = 15.0  # how long announcing waits for the broker to take each update notice
BROKER_VERSION_TOPIC = "$SYS/broker/version"  # retained by Mosquitto: "mosquitto version 2.0.11"
RECEIVE_MAXIMUM_FIXED = (2, 0, 13)  # Mosquitto keeps to Receive Maximum from this version on (eclipse/mosquitto#2306)


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class MqttConnectError(HubError):
    """The broker refused us or did not answer in time; the message carries paho's reason string."""


def tls_files(tls: MqttTlsConfig) -> dict[str, str | None]:
    """paho's tls_set arguments; the broker's certificate is always verified (hostname included)."""
    as_str = lambda p: str(p) if p is not None else None  # noqa: E731
    return {"ca_certs": as_str(tls.ca_file), "certfile": as_str(tls.cert_file), "keyfile": as_str(tls.key_file)}


# the knowledge base unavailable for a while (locked, unreachable, its pool exhausted, its image folder full): tried
# until it works (an image that could not be written was a dropped message, recovered only by the device's re-ask)
TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, DisconnectionError, PoolTimeoutError, ImageWriteError)


@HUB_TRANSPORTS.register(TRANSPORT)
class MqttTransport(HubTransport):
    """Subscribes to every device's samples/status (optionally as a shared-subscription group); announces new
    bundles as retained notices (devices fetch them over gRPC)."""

    name = TRANSPORT
    config: MqttConfig

    def __init__(self, service: HubService, config: MqttConfig) -> None:
        super().__init__(service, config)
        self.state = ConnectionState.DISCONNECTED
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._inflight: dict[int, str] = {}  # mid -> sample id, until the broker's PUBACK
        self._queued: set[str] = set()  # sample ids whose reply paho holds (it re-sends them after a reconnect)
        self._acked_early: set[int] = set()  # PUBACKs that came while their publish was still in progress
        self._untracked: set[int] = set()  # mids of update notices and rejected replies, until their PUBACK
        self._publishing = 0
        self._generation = 0  # connects and disconnects so far: a message's acknowledgement and a re-publish pass
        # belong to one connection
        self._sent_at: OrderedDict[str, float] = OrderedDict()  # sample id -> when its reply was last published
        self._acked: list[str] = []  # sample ids whose reply the broker acknowledged, not yet marked delivered
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_acks, name="mqtt-acks", daemon=True)
        self._lock = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        self._ingest = IngestWorker(self._handle, self._ack, lambda: self._generation,
                                    lambda name: service.metrics.inc(name), transient=TRANSIENT,
                                    max_held_bytes=config.max_held_bytes)
        self.broker_version: tuple[int, ...] | None = None  # from $SYS/broker/version, if the account may read it
        self.client.max_inflight_messages_set(100)
        if config.tls is not None:
            self.client.tls_set(**tls_files(config.tls))
        if config.password is not None:
            self.client.username_pw_set(config.username, config.password.get_secret_value())
        self.devices = device_registry(service.config, service.kb)  # syncs the broker's access files
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.message_callback_add(BROKER_VERSION_TOPIC, self._on_broker_version)  # not on_message: not ingest
        self._version_mid: int | None = None
        self.agents = AgentVersions(service.metrics.inc)  # which agent each device runs, from its status
        service.add_reply_listener(TRANSPORT, self.deliver)

    # --- connection -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.access is not None:
            self.devices.sync()  # the hub's own account must be in force before it connects
        self.state = ConnectionState.CONNECTING
        if not self._flusher.is_alive():
            self._flusher.start()
        self._ingest.start()
        self.client.connect_async(self.config.host, self.config.port, self.config.keepalive_s, clean_start=False,
                                  properties=session_properties(self.config.session_expiry_s, INGEST_WINDOW))
        self.client.loop_start()
        if not self._connected.wait(self.config.connect_timeout_s):
            self.stop()
            raise MqttConnectError(f"no CONNACK from {self.config.host}:{self.config.port} within "
                                   f"{self.config.connect_timeout_s}s: {self._connect_error or 'no answer'}")

    def stop(self) -> None:
        self.state = ConnectionState.CLOSED
        self._ingest.stop()  # first: what it committed is acknowledged before we disconnect
        self.client.disconnect()
        self.client.loop_stop()
        self._stopping.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=10)

    def _on_connect(self, client: mqtt.Client, _userdata, flags, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            self._connect_error = str(reason_code)
            log.error("MQTT connect refused: %s", reason_code)
            return
        samples = topic(self.config.prefix, "+", "samples")
        status = topic(self.config.prefix, "+", "status")
        if self.config.share_group:
            samples = f"$share/{self.config.share_group}/{samples}"
            status = f"$share/{self.config.share_group}/{status}"
        client.subscribe([(samples, QOS), (status, QOS)])
        if self.broker_version is None:
            self._version_mid = client.subscribe(BROKER_VERSION_TOPIC, 0)[1]
        self.state = ConnectionState.CONNECTED
        self._connected.set()
        log.info("MQTT connected to %s:%d (session present: %s)", self.config.host, self.config.port,
                 flags.session_present)
        with self._lock:
            self._generation += 1
        threading.Thread(target=self._redeliver, name="mqtt-redeliver", daemon=True).start()

    def _on_subscribe(self, _client, _userdata, mid: int, reason_codes, _properties) -> None:  # type: ignore[no-untyped-def]
        if mid == self._version_mid and all(code.is_failure for code in reason_codes):
            log.info("MQTT broker version unknown: the hub's account may not read %s (with mqtt.access, add `user "
                     "%s` / `topic read %s` to extra_acl_file to have it checked)", BROKER_VERSION_TOPIC,
                     self.config.username, BROKER_VERSION_TOPIC)

    def _on_broker_version(self, client: mqtt.Client, _userdata, message: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        """Once per process: warn about a Mosquitto that oversteps Receive Maximum, then stop listening."""
        found = re.search(rb"mosquitto version (\d+)\.(\d+)\.(\d+)", message.payload, re.IGNORECASE)
        if self.broker_version is not None or found is None:
            return
        self.broker_version = tuple(int(part) for part in found.groups())
        version = ".".join(map(str, self.broker_version))
        client.unsubscribe(BROKER_VERSION_TOPIC)
        if self.broker_version < RECEIVE_MAXIMUM_FIXED:
            log.warning("MQTT broker is Mosquitto %s: before 2.0.13 it sends more than the %d unacknowledged "
                        "messages the hub allows (Receive Maximum; eclipse/mosquitto#2306). The hub bounds what it "
                        "holds by reading no more from the broker until ingest catches up, so one flooding device "
                        "slows every device's ingest; upgrade the broker to 2.0.13 or later", version, INGEST_WINDOW)
        else:
            log.info("MQTT broker is Mosquitto %s", version)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.DISCONNECTED
            log.warning("MQTT disconnected (%s); paho reconnects", reason_code)
        with self._lock:
            self._generation += 1  # from now on, no acknowledgement for a message of the lost connection
            self._lock.notify_all()

    # --- ingest -----------------------------------------------------------------------------------------

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        """On paho's network thread: only queue it (the generation is the connection it came on), then, if the hub
        holds more than its caps, wait until ingest let some go (the broker keeps the rest meanwhile). A QoS 0
        sample is dropped: devices publish samples at QoS 1, and nothing bounds how many QoS 0 messages the broker
        sends."""
        self.service.metrics.inc("mqtt_messages_received")
        if message.qos == 0 and message.topic.endswith("/samples"):
            self.service.metrics.inc("mqtt_qos0_dropped")
            log.debug("QoS 0 sample message on %s dropped (devices publish at QoS 1)", message.topic)
            return
        self._ingest.put(Received(self._generation, message.mid, message.qos, message.topic, message.payload))
        self._ingest.wait_for_room()

    def _ack(self, message: Received) -> None:
        """Under the lock `_on_disconnect` bumps the generation in: a message of a lost connection is never
        acknowledged, as its packet id may name another message on the next one (paho drops what it queued
        before the reconnect)."""
        if message.qos == 0:
            return
        with self._lock:
            if message.generation != self._generation:
                self.service.metrics.inc("mqtt_ingest_stale")
                return
            self.client.ack(message.mid, message.qos)  # only queues the packet: no paho lock is waited for

    def _handle(self, message: Received) -> None:
        """On the ingest worker; a refused message is handled (counted and logged once by the service)."""
        parts = message.topic.split("/")
        device_id, kind = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", "")
        try:
            if kind == "samples":
                self._on_samples(device_id, message.payload)
            elif kind == "status":
                self._on_status(device_id, message.payload)
        except BadInputError:
            pass

    def _on_samples(self, device_id: str, payload: bytes) -> None:
        self._check_enrolled(device_id)
        result = self.service.submit_payload(payload, TRANSPORT, self.config.max_payload_bytes, sender=device_id)
        again = set(result.duplicates)
        self.deliver([r for r in result.immediate if r.sample_id not in again or self._answer_again(r.sample_id)],
                     device_hint=device_id)

    def _answer_again(self, sample_id: str) -> bool:
        """A re-asked sample gets its reply again, but not within `ANSWER_AGAIN_S` of the last time it was sent:
        asks a device sent while the hub was away or busy queue at the broker and arrive in a burst, crossing the
        reply they ask for. If that reply is lost, the device asks again later and is answered then."""
        with self._lock:
            last = self._sent_at.get(sample_id)
        if last is not None and self.service.clock() - last < ANSWER_AGAIN_S:
            self.service.metrics.inc("mqtt_answer_again_skipped")
            return False
        return True

    def _sent(self, sample_id: str) -> None:
        """Under the lock."""
        self._sent_at[sample_id] = self.service.clock()
        self._sent_at.move_to_end(sample_id)
        while len(self._sent_at) > SENT_KEPT:
            self._sent_at.popitem(last=False)

    def _check_enrolled(self, device_id: str) -> None:
        """With hub-managed access, a message queued by a device before its revocation is refused too."""
        if self.config.access is None or self.devices.is_active(device_id):
            return
        error = DeviceAuthError(f"message on {device_id!r}'s topic, which has no active credential")
        self.service.metrics.inc(error.code)
        log.warning("MQTT message refused (%s): %s", error.code, error)
        raise error

    def _on_status(self, device_id: str, payload: bytes) -> None:
        """Capped before decoding (`max_status_bytes`, or `max_payload_bytes` if smaller): a status is stored whole on
        the device's row, read at every refresh of the operator page, and a retained one is re-sent to the hub at
        every subscribe. A refused one leaves the stored status as it was."""
        error: BadInputError
        cap, setting = min((self.config.max_status_bytes, "mqtt.max_status_bytes"),
                           (self.config.max_payload_bytes, "mqtt.max_payload_bytes"))
        if len(payload) > cap:
            error = StatusTooLargeError(f"status from {device_id!r}: payload of {len(payload)} bytes exceeds {cap} "
                                        f"({setting})")
            self.service.metrics.inc(error.code)
            log.warning("MQTT status refused (%s): %s", error.code, error)
            raise error
        try:
            status = hub_pb2.DeviceStatus.FromString(payload)
        except Exception as exc:
            error = MalformedMessageError(f"status from {device_id!r} is not a DeviceStatus: {exc}")
        else:
            self._check_enrolled(device_id)
            self.service.check_sender(device_id, status.device_id)  # counted and logged by the service
            if self.service.kb.record_status(status):
                self.agents.seen(status)
                return
            else:
                error = UnknownDeviceError(f"status from unregistered device {device_id!r}")
        self.service.metrics.inc(error.code)
        log.warning("MQTT status refused (%s): %s", error.code, error)
        raise error

    # --- replies ----------------------------------------------------------------------------------------

    def deliver(self, replies: Sequence[hub_pb2.SampleReply], device_hint: str = "") -> None:
        for reply in replies:
            tracked = reply.status != hub_pb2.REPLY_STATUS_REJECTED  # rejected samples were never stored
            with self._lock:
                if tracked and reply.sample_id in self._queued:
                    continue  # paho still holds this reply and sends it (again) itself
                self._queued.add(reply.sample_id)
                self._publishing += 1
                if tracked:
                    self._sent(reply.sample_id)
            device = reply.device_id or device_hint
            info = self.client.publish(topic(self.config.prefix, device, "replies"), reply.SerializeToString(), QOS)
            with self._lock:
                self._publishing -= 1
                queued = info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: sent on reconnect
                early = self._settle(info.mid, queued, reply.sample_id if tracked else None)
                if not tracked or not queued or early:
                    self._queued.discard(reply.sample_id)
            if tracked and early:
                self._acknowledged(reply.sample_id)

    def _settle(self, mid: int, queued: bool, sample_id: str | None) -> bool:
        """Under the lock, once `publish` returned `mid`: True if its PUBACK already came. Else a queued message
        is awaited: a reply by its sample id, an untracked message (`sample_id` None) so its PUBACK is not taken
        for an early one. Either way no early entry for `mid` is left behind."""
        early = mid in self._acked_early
        self._acked_early.discard(mid)
        self._untracked.discard(mid)  # paho does not reuse a mid in flight: an old entry is dead
        if queued and not early:
            if sample_id is None:
                self._untracked.add(mid)
            else:
                self._inflight[mid] = sample_id
        return early and queued

    def _on_publish(self, _client, _userdata, mid: int, _reason_code, _properties) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            sample_id = self._inflight.pop(mid, None)
            if sample_id is None and mid in self._untracked:
                self._untracked.discard(mid)
            elif sample_id is None and self._publishing:
                self._acked_early.add(mid)  # PUBACK before its publisher settled the mid (`_settle` takes it)
            self._queued.discard(sample_id or "")
            self._lock.notify_all()
        if sample_id is not None:
            self._acknowledged(sample_id)

    def _acknowledged(self, sample_id: str) -> None:
        """Recorded by the flusher thread, a batch per transaction: paho's network thread, which also reads the
        samples and the PUBACKs, must not wait for the database once per reply."""
        with self._lock:
            self._acked.append(sample_id)

    def _flush_acks(self) -> None:
        while True:
            stopping = self._stopping.wait(ACK_FLUSH_S)
            with self._lock:
                batch, self._acked = self._acked, []
            if batch:
                try:
                    self.service.kb.mark_delivered(batch)
                    self.service.metrics.inc("mqtt_replies_acknowledged", len(batch))
                except Exception:  # a database hiccup: those replies are re-published after the next connect
                    log.exception("could not mark %d replies delivered", len(batch))
            if stopping:
                return

    def _redeliver(self) -> None:
        """Re-publish replies made while we were away (or whose PUBACK never came), page by page, waiting for
        PUBACKs between pages; a disconnect ends the pass (the next connect starts another)."""
        cursor, generation = (-1.0, ""), self._generation
        current = lambda: self.state is ConnectionState.CONNECTED and self._generation == generation
        try:
            while current():
                page = self.service.kb.undelivered(TRANSPORT, REDELIVER_PAGE, after=cursor)
                if not page:
                    return
                cursor = page[-1][0]
                for _, reply in page:
                    with self._lock:
                        if not self._lock.wait_for(lambda: len(self._inflight) < REPLY_WINDOW or not current(), 30):
                            return
                    if not current():
                        return
                    self.service.metrics.inc("mqtt_replies_republished")
                    self.deliver([reply])
        except Exception:
            log.exception("could not re-publish undelivered replies")

    def describe(self) -> str:
        return f"MQTT broker {self.config.host}:{self.config.port} ({self.state.value})"

    def announce(self, notice: hub_pb2.ModelUpdate, device_ids: Sequence[str]) -> None:
        """Publish the notice retained to each device and wait for the broker to take them all. A notice made while
        the broker is away stays in paho's queue and goes out after the reconnect (logged, not an error); one paho
        refused (its queue full) is an AnnounceError."""
        for device_id, info in zip(device_ids, self.publish_update(device_ids, notice)):
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                log.warning("update notice %s %s to %s queued: the broker is not connected, it goes out after the "
                            "reconnect", notice.bundle_name, notice.version, device_id)
                continue
            what = f"update notice {notice.bundle_name} {notice.version} to {device_id!r} over MQTT"
            try:
                info.wait_for_publish(PUBACK_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:  # paho: not queued (queue full) or publish failed
                raise AnnounceError(f"{what}: {exc}") from exc
            if not info.is_published():  # paho's wait returns silently when it times out
                raise AnnounceError(f"{what}: the broker did not acknowledge it within {PUBACK_TIMEOUT_S}s (paho "
                                    f"keeps it and sends it again after a reconnect)")

    def publish_update(self, device_ids: Sequence[str], notice: hub_pb2.ModelUpdate) -> list[mqtt.MQTTMessageInfo]:
        """Retained model-update notice per device: a device that connects later still sees the latest."""
        payload = notice.SerializeToString()
        return [self._publish_untracked(topic(self.config.prefix, d, "updates"), payload) for d in device_ids]

    def _publish_untracked(self, topic_name: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """A retained QoS 1 message whose PUBACK marks nothing; its mid is settled like a reply's."""
        with self._lock:
            self._publishing += 1
        info: mqtt.MQTTMessageInfo | None = None
        try:
            info = self.client.publish(topic_name, payload, QOS, retain=True)
            return info
        finally:
            with self._lock:
                self._publishing -= 1
                if info is not None:
                    self._settle(info.mid, info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), None)
