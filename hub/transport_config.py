"""The hub's transport sections of hub.yaml (`grpc:`, `mqtt:`): each named as the transport registered under it
(hgen.hub.transports), kept apart from the transports' code so reading a config imports no network library."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from hgen.runtime.config import StrictModel

FREE_WORKERS = 4  # gRPC threads a device at its max_calls_per_device must leave to the others


class GrpcTlsConfig(StrictModel):
    """Server-side TLS of the gRPC service; a client CA turns on mutual TLS (devices must show a certificate)."""

    cert_file: Path = Field(title="Server certificate chain (PEM) presented to devices")
    key_file: Path = Field(title="Private key (PEM) of cert_file")
    client_ca_file: Path | None = Field(None, title="CA (PEM) that signs device certificates; set: mutual TLS, "
                                                    "devices without a certificate it signed are refused")
    client_ca_key_file: Path | None = Field(None, title="Private key (PEM) of client_ca_file: `hgen-hub add-device "
                                                        "--certificate-dir` issues device certificates with it")


class MqttTlsConfig(StrictModel):
    """Client-side TLS to the broker (its TLS listener); a certificate for brokers that require one."""

    ca_file: Path | None = Field(None, title="CA (PEM) that signed the broker's certificate (None: the system's)")
    cert_file: Path | None = Field(None, title="Client certificate (PEM) for brokers that require one")
    key_file: Path | None = Field(None, title="Private key (PEM) of cert_file")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class GrpcConfig(StrictModel):
    enabled: bool = Field(True, title="Serve the AnnotationHub gRPC service")
    host: str = Field("127.0.0.1", title="Address to bind")
    port: int = Field(50051, ge=0, le=65535, title="Port to bind (0 = any free port)")
    max_message_bytes: int = Field(8 * 1024 * 1024, gt=0, title="Max send/receive message size, set on the server")
    max_status_bytes: int = Field(64 * 1024, gt=0, title="Max ReportStatus message (DeviceStatus) size: larger ones "
                                  "are refused (RESOURCE_EXHAUSTED, metric status_too_large) before they are "
                                  "decoded or stored. An edge agent's status is a few KiB")
    max_workers: int = Field(16, ge=1, title="gRPC thread pool size: every call holds a thread while it runs and a "
                             "stream for as long as it is open (Submit, FetchBundle, a device's WatchUpdates), so "
                             f"size it for the fleet; it must leave {FREE_WORKERS} free while one device holds "
                             "max_calls_per_device calls")
    max_calls_per_device: int = Field(7, ge=2, title="Calls of any kind one device may have open at once, counted "
                                      "from the moment its credential is proved, before its request message is "
                                      "read; more are refused (RESOURCE_EXHAUSTED, metric grpc_calls_capped), "
                                      "except a new WatchUpdates call, which takes over the slot of the device's "
                                      "older watch stream (ended). The edge agent holds up to 7 (1 WatchUpdates, 4 "
                                      "Submit, 1 FetchBundle, 1 ReportStatus); 7 keeps max_workers 11 valid")
    max_submit_streams_per_device: int = Field(4, ge=1, title="Submit streams one device may hold open, within "
                                               "max_calls_per_device; more are refused (RESOURCE_EXHAUSTED, metric "
                                               "grpc_submit_streams_capped). The edge agent opens up to 4")
    max_fetch_streams_per_device: int = Field(2, ge=1, title="FetchBundle streams one device may hold open, within "
                                              "max_calls_per_device; more are refused (RESOURCE_EXHAUSTED, metric "
                                              "grpc_fetch_streams_capped)")
    request_read_timeout_s: float = Field(10.0, gt=0, title="How long a ReportStatus, WatchUpdates or FetchBundle "
                                          "call may take to send its request message once its credential is "
                                          "proved; then the hub cancels it (metric grpc_request_read_timeouts) and "
                                          "frees its thread")
    submit_read_timeout_s: float = Field(600.0, gt=0, title="The same for a Submit call, whose message (a batch of "
                                         "images, megabytes) may take minutes to upload on a slow link; keep it "
                                         "below the devices' Submit deadline (the edge agent's hub.call_timeout_s, "
                                         "700 s). The per-device Submit stream cap bounds what a silent device "
                                         "holds meanwhile")
    reply_poll_s: float = Field(0.25, gt=0, title="How often an open Submit stream re-reads the knowledge base "
                                                  "for replies made by another hub process")
    bundle_chunk_bytes: int = Field(256 * 1024, gt=0, title="Default FetchBundle chunk size")
    advertise_url: str | None = Field(None, pattern=r"^grpcs?://", title="Where devices fetch bundles, written into "
                                      "update notices (default grpc[s]://<host>:<bound port>; none for a wildcard "
                                      "host such as 0.0.0.0: devices then fetch from their own hub URL)")
    tls: GrpcTlsConfig | None = Field(None, title="Serve TLS (devices use grpcs://); None: plaintext")

    @model_validator(mode="after")
    def _room_for_others(self) -> GrpcConfig:
        """A pool one device can fill stalls every other device's calls (they queue behind its open calls); a
        per-kind cap above the per-device one would never be reached."""
        for name in ("max_submit_streams_per_device", "max_fetch_streams_per_device"):
            if getattr(self, name) > self.max_calls_per_device:
                raise ValueError(f"{name} {getattr(self, name)} exceeds max_calls_per_device "
                                 f"{self.max_calls_per_device}, which counts every call of a device: raise that too")
        if self.max_workers < self.max_calls_per_device + FREE_WORKERS:
            raise ValueError(f"max_workers {self.max_workers} is too small: one device may hold "
                             f"{self.max_calls_per_device} threads (max_calls_per_device), and {FREE_WORKERS} must "
                             "stay free for the others")
        return self


class MqttAccessConfig(StrictModel):
    """The broker's access control, owned by the hub: it renders these files from the knowledge base (its own
    account plus every enrolled device) and makes the broker reload them on every add, revoke and rotate."""

    password_file: Path = Field(title="Mosquitto password_file the hub writes (the broker's config points at it)")
    acl_file: Path = Field(title="Mosquitto acl_file the hub writes: device X may publish only <prefix>/X/samples "
                                 "and /status and read only <prefix>/X/replies and /updates")
    pid_file: Path | None = Field(None, title="Broker's pid_file: the hub sends it SIGHUP to reload the files")
    reload_command: tuple[str, ...] = Field((), title="Instead of pid_file: a command that makes the broker reload "
                                                      "(e.g. [sudo, systemctl, reload, mosquitto])")
    reload_timeout_s: float = Field(10.0, gt=0, title="How long a change waits for the broker to load the new files")
    extra_password_file: Path | None = Field(None, title="Accounts the hub does not own (e.g. a dashboard), in "
                                                         "Mosquitto's format, appended to password_file verbatim")
    extra_acl_file: Path | None = Field(None, title="ACL lines for those accounts, appended to acl_file verbatim")

    @model_validator(mode="after")
    def _one_reload(self) -> MqttAccessConfig:
        if (self.pid_file is None) == (not self.reload_command):
            raise ValueError("set exactly one of pid_file and reload_command")
        return self


class MqttConfig(StrictModel):
    enabled: bool = Field(False, title="Ingest samples from an MQTT broker")
    host: str = Field("127.0.0.1", title="Broker host")
    port: int = Field(1883, ge=1, le=65535, title="Broker port")
    prefix: str = Field("hgen/v1", title="Topic prefix: <prefix>/<device>/samples|replies|updates|status")
    client_id: str = Field("hgen-hub", title="MQTT client id; persistent session is kept under it. Distinct per hub "
                           "process: the hubs' listener must not set use_username_as_clientid (the devices' must)")
    share_group: str | None = Field(None, title="Shared-subscription group ($share/<group>/...) for several hubs")
    session_expiry_s: int = Field(3600, ge=0, title="MQTT v5 session expiry: broker keeps QoS 1 messages this long")
    keepalive_s: int = Field(30, ge=5, title="MQTT keepalive")
    max_payload_bytes: int = Field(8 * 1024 * 1024, gt=0, title="Larger sample payloads are refused and counted")
    max_status_bytes: int = Field(64 * 1024, gt=0, title="Max status message (DeviceStatus) size: larger ones are "
                                  "refused (metric status_too_large) before they are decoded or stored. An edge "
                                  "agent's status is a few KiB")
    max_held_bytes: int = Field(256 * 1024 * 1024, gt=0, title="Payload bytes of messages the hub holds received "
                                "but not yet stored and acknowledged; beyond them, or beyond 64 QoS 1 messages (the "
                                "Receive Maximum it asks for, which Mosquitto before 2.0.13 oversteps), it reads "
                                "nothing more from the broker until ingest catches up (metric mqtt_ingest_paused)")
    connect_timeout_s: float = Field(10.0, gt=0, title="How long start-up waits for the broker's CONNACK")
    tls: MqttTlsConfig | None = Field(None, title="Connect with TLS (the broker's TLS listener); None: plaintext")
    username: str = Field("hgen-hub", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                          title="The hub's broker account (the only one that may write replies and updates)")
    password: SecretStr | None = Field(None, title="The hub's broker password (required with access)")
    access: MqttAccessConfig | None = Field(None, title="Broker access control the hub writes and reloads (None: "
                                                        "the operator manages the broker's accounts)")

    @model_validator(mode="after")
    def _password_with_access(self) -> MqttConfig:
        if self.access is not None and self.password is None:
            raise ValueError("mqtt.password is required when the hub manages the broker's access (mqtt.access)")
        return self
