"""A hub process: the service plus what its config enables (gRPC, MQTT, retrain worker, web UI)."""

from __future__ import annotations

import logging

from hgen.hub.config import HubConfig
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore, RetrainWorker
from hgen.hub.service import HubService
from hgen.hub.transports.grpc_server import GrpcTransport
from hgen.hub.transports.mqtt import MqttTransport

log = logging.getLogger(__name__)


class HubApp:
    """Start/stop in dependency order: knowledge base, sweep, transports, retrain worker, web (stopped in reverse)."""

    def __init__(self, config: HubConfig, *, service: HubService | None = None) -> None:
        """`service`: one built on a simulated clock (tests move deadlines and leases by moving it); by default
        the config's, on the wall clock. Its clock is the retrain leases' clock too."""
        self.config = config
        self.service = service if service is not None else HubService.from_config(config)
        self.grpc = GrpcTransport(self.service, config.grpc) if config.grpc.enabled else None
        self.mqtt = MqttTransport(self.service, config.mqtt) if config.mqtt.enabled else None
        self.retrain_store = RetrainStore(self.service.kb, clock=self.service.clock)
        self.retrain: RetrainWorker | None = None
        if config.retrain.enabled:
            pipeline = RetrainPipeline(config.retrain, self.retrain_store,
                                       HubPublisher(self.service.kb, self.grpc, self.mqtt))
            self.retrain = RetrainWorker(pipeline, self.retrain_store)
            self.service.add_reply_observer(self.retrain.notify)
        self.web = None
        if config.web.enabled:
            from hgen.hub.web.server import WebServer  # Flask is only needed when the web UI is on

            self.web = WebServer(self, config.web)

    def start(self) -> HubApp:
        self.service.start()
        try:
            if self.grpc is not None:
                self.grpc.start()
            if self.mqtt is not None:
                self.mqtt.start()
            if self.retrain is not None:
                self.retrain.start()
            if self.web is not None:
                self.web.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.web is not None:
            self.web.stop()
        if self.retrain is not None:
            self.retrain.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.grpc is not None:
            self.grpc.stop()
        self.service.close()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc is not None else 0

    @property
    def web_url(self) -> str:
        """http://host:port of the web UI ('' when it is off)."""
        return self.web.url if self.web is not None else ""
