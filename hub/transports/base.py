"""What every hub transport is: a named backend the hub starts, stops and announces new bundles through.

A transport registers itself by name in `HUB_TRANSPORTS` (one module each); its typed config is the hub
config's section of the same name (`grpc:`, `mqtt:`), which has an `enabled` switch. `HubApp` starts every
enabled one and the publisher announces through each, so adding a transport touches neither.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hgen.hub.errors import HubError
from hgen.runtime.errors import PlainKeyError

if TYPE_CHECKING:
    from hgen.hub.config import HubConfig
    from hgen.hub.service import HubService
    from hgen.protos import hub_pb2


class UnknownHubTransportError(HubError, PlainKeyError):
    """A transport name no module registered."""


class AnnounceError(HubError):
    """A transport could not tell devices of a new bundle; its record stays, so devices that look find it."""


class HubTransport(ABC):
    """Carries hgen.v1 messages between devices and the hub over one protocol."""

    name: ClassVar[str]  # its registered name, the hub config section holding its config and its URL scheme

    def __init__(self, service: HubService, config: Any) -> None:
        self.service = service
        self.config = config

    @classmethod
    def section(cls, config: HubConfig) -> Any:
        """This transport's part of the hub config (the field named as the transport)."""
        return getattr(config, cls.name)

    @classmethod
    def enabled_in(cls, config: HubConfig) -> bool:
        return bool(cls.section(config).enabled)

    @abstractmethod
    def start(self) -> None:
        """Bind or connect; raises a HubError when it cannot serve."""

    @abstractmethod
    def stop(self) -> None:
        """Drain and close; safe to call after a failed start."""

    @property
    def fetch_uri(self) -> str:
        """Where devices fetch bundles through this transport ('' when it serves none)."""
        return ""

    @abstractmethod
    def describe(self) -> str:
        """One line for the operator: where it serves."""

    @abstractmethod
    def announce(self, notice: hub_pb2.ModelUpdate, device_ids: Sequence[str]) -> None:
        """Tell devices a new bundle is published (the knowledge base already holds its record)."""
