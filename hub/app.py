"""A hub process: the service plus the transports its config enables; what `hgen-hub serve` runs."""

from __future__ import annotations

import logging

from hgen.hub.config import HubConfig
from hgen.hub.service import HubService
from hgen.hub.transports.grpc_server import GrpcTransport
from hgen.hub.transports.mqtt import MqttTransport

log = logging.getLogger(__name__)


class HubApp:
    """Start/stop in dependency order: knowledge base, sweep, then transports (stopped in reverse)."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.service = HubService.from_config(config)
        self.grpc = GrpcTransport(self.service, config.grpc) if config.grpc.enabled else None
        self.mqtt = MqttTransport(self.service, config.mqtt) if config.mqtt.enabled else None

    def start(self) -> HubApp:
        self.service.start()
        try:
            if self.grpc is not None:
                self.grpc.start()
            if self.mqtt is not None:
                self.mqtt.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.grpc is not None:
            self.grpc.stop()
        self.service.close()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc is not None else 0
