"""The transport contract: non-blocking `send`, replies and update notices through callbacks, explicit state.

A transport never owns delivery guarantees: the outbox does. A send that fails leaves the samples in the
outbox, and the agent sends them again on reconnect or after `resend_after_s`.
"""

from __future__ import annotations

import enum
import importlib.metadata
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from hgen.edge_agent.config import HubConfig
from hgen.edge_agent.errors import AgentConfigError
from hgen.protos import PROTOCOL_REVISION, hub_pb2
from hgen.runtime.registry import Registry


# What to check when the hub or its broker refuses the device's credential (both transports say it).
CREDENTIAL_HINT = ("check device_id and hub.secret (the secret `hgen-hub add-device` issued; rotated or revoked ones "
                   "stop working)")


def agent_version() -> str:
    """The installed `hgen` release (what pip installed on the device); "unknown" from a source tree never installed."""
    try:
        return importlib.metadata.version("hgen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def stamped(status: hub_pb2.DeviceStatus) -> hub_pb2.DeviceStatus:
    """`status` naming this agent's release and protocol revision (fields it already sets are kept): every status a
    transport sends carries them, the MQTT last will too, so a hub upgraded ahead of its devices can tell the
    operator which of them still run an older agent."""
    if not status.agent_version:
        status.agent_version = AGENT_VERSION
    if not status.protocol_revision:
        status.protocol_revision = PROTOCOL_REVISION
    return status


AGENT_VERSION = agent_version()


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class TransportErrorCode(enum.Enum):
    """Why the hub link is not healthy; `.value` is the readable text shown on status."""

    OK = "ok"
    UNREACHABLE = "hub unreachable"
    REFUSED = "hub refused the connection or request"
    TIMEOUT = "hub did not answer in time"
    TLS = "TLS handshake failed"
    PROTOCOL = "unexpected message from the hub"
    NOT_FOUND = "bundle not found at the hub"


@dataclass(frozen=True)
class TransportCallbacks:
    """Called from transport threads; the agent's handlers are thread-safe."""

    on_reply: Callable[[hub_pb2.SampleReply], None]
    on_update: Callable[[hub_pb2.ModelUpdate], None]
    on_state: Callable[[ConnectionState, TransportErrorCode, str], None]


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    tls: bool


def parse_endpoint(url: str) -> Endpoint:
    """`<transport>[s]://host:port`: the scheme names a registered transport, a trailing `s` asks for TLS (so a new
    transport module is a new scheme, with no list of schemes to keep in step)."""
    parts = urlsplit(url)
    name = parts.scheme.removesuffix("s")
    try:
        port = parts.port
    except ValueError:
        port = None
    if name not in TRANSPORTS or not parts.hostname or not port:
        forms = " or ".join(f"{known}[s]://host:port" for known in TRANSPORTS.names())
        raise AgentConfigError(f"hub url must be {forms}, got {url!r}")
    return Endpoint(name, parts.hostname, port, parts.scheme != name)


class Transport(ABC):
    """One link to the hub for one device."""

    # True when the hub URL names a message broker that the hub and its devices both connect to (the hub must be
    # pointed at the same broker), not the hub itself.
    via_broker: ClassVar[bool] = False

    def __init__(self, endpoint: Endpoint, config: HubConfig, device_id: str, callbacks: TransportCallbacks) -> None:
        self.endpoint = endpoint
        self.config = config
        self.device_id = device_id
        self.callbacks = callbacks
        self.state = ConnectionState.DISCONNECTED
        self.error = TransportErrorCode.OK
        self.detail = ""
        self._state_lock = threading.Lock()

    def _set_state(self, state: ConnectionState, error: TransportErrorCode = TransportErrorCode.OK,
                   detail: str = "") -> None:
        with self._state_lock:
            changed = (state, error) != (self.state, self.error)
            if self.state is ConnectionState.CLOSED:
                return
            self.state, self.error, self.detail = state, error, detail
        if changed:
            self.callbacks.on_state(state, error, detail)

    @abstractmethod
    def start(self) -> None:
        """Begin connecting (never blocks on an unreachable hub)."""

    @abstractmethod
    def send(self, request: hub_pb2.AnnotationRequest) -> bool:
        """Hand a request to the link; False when it cannot take it now (it stays in the outbox)."""

    def watch(self, bundle_name: str, known_version: str) -> None:
        """Follow update notices for `bundle_name` (MQTT gets them from the retained topic without asking)."""

    def in_flight(self) -> frozenset[str]:
        """Sample ids the link is still waiting on (not to be resent yet)."""
        return frozenset()

    def accepting(self) -> bool:
        """Whether `send` could take a request now, answered cheaply (no I/O): the resend scan asks first, so a link
        that is down or full costs no read of the stored images `send` would refuse. The answer may change before
        `send` is called; `send` still decides."""
        return True

    @abstractmethod
    def report_status(self, status: hub_pb2.DeviceStatus) -> None:
        """Best-effort telemetry."""

    @abstractmethod
    def fetch_bundle(self, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
        """Download the bundle a notice names into `dest`; raises SwapError."""

    @abstractmethod
    def stop(self) -> None:
        """Close the link (idempotent)."""


TRANSPORTS: Registry[type[Transport]] = Registry("hub transport", package="hgen.edge_agent.transports")


def open_transport(config: HubConfig, device_id: str, callbacks: TransportCallbacks) -> Transport:
    if config.url is None:
        raise AgentConfigError("hub.url is not set")
    endpoint = parse_endpoint(config.url)  # HubConfig has refused a TLS scheme without hub.tls already
    return TRANSPORTS.get(endpoint.scheme)(endpoint, config, device_id, callbacks)
