"""A hub process: the service plus what its config enables (its transports, retrain worker, web UI)."""

from __future__ import annotations

import logging
from typing import TypeVar

from hgen.hub.config import HubConfig
from hgen.hub.errors import HubError
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore, RetrainWorker
from hgen.hub.retrain.relay import BundleRelay
from hgen.hub.service import HubService
from hgen.hub.transports import HUB_TRANSPORTS, HubTransport

log = logging.getLogger(__name__)
T = TypeVar("T", bound=HubTransport)


class HubApp:
    """Start/stop in dependency order: knowledge base, sweep, transports, bundle relay, retrain worker, web (stopped
    in reverse)."""

    def __init__(self, config: HubConfig, *, service: HubService | None = None) -> None:
        """`service`: one built on a simulated clock (tests move deadlines and leases by moving it); by default
        the config's, on the wall clock. Its clock is the retrain leases' clock too."""
        self.config = config
        config.retrain.require_files()
        self.service = service if service is not None else HubService.from_config(config)
        self.transports: tuple[HubTransport, ...] = tuple(
            kind(self.service, kind.section(config)) for _, kind in HUB_TRANSPORTS.items() if kind.enabled_in(config))
        self.retrain_store = RetrainStore(self.service.kb, clock=self.service.clock)
        self._publisher = HubPublisher(self.service.kb, self.transports)  # one: it orders every announcement
        # releases by hand (rollback, publish) and the relay need it whether or not this hub retrains
        self.pipeline = RetrainPipeline(config.retrain, self.retrain_store, self._publisher)
        self.retrain: RetrainWorker | None = None
        if config.retrain.enabled:
            self.retrain = RetrainWorker(self.pipeline, self.retrain_store)
            self.service.add_reply_observer(self.retrain.notify)
        self.relay = BundleRelay(self.pipeline, self._publisher) if config.retrain.models and self.transports else None
        self.web = None
        if config.web.enabled:
            from hgen.hub.web.server import WebServer  # Flask is only needed when the web UI is on

            self.web = WebServer(self, config.web)

    def start(self) -> HubApp:
        self.service.start()
        try:
            for transport in self.transports:
                transport.start()
            if self.relay is not None:
                self.relay.start()
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
        if self.relay is not None:
            self.relay.stop()
        for transport in reversed(self.transports):
            transport.stop()
        self.service.close()

    def transport(self, kind: type[T]) -> T:
        """The running transport of that class (tests and tools reach its port or client through it)."""
        found = next((t for t in self.transports if isinstance(t, kind)), None)
        if found is None:
            raise HubError(f"the hub runs no {kind.name} transport (enable `{kind.name}` in its config)")
        return found

    def publisher(self) -> HubPublisher:
        """Publishes a bundle as the retrain worker does: recorded, then announced through every transport."""
        return self._publisher

    def describe(self) -> str:
        """Where it serves, for the operator's start-up line."""
        parts = [t.describe() for t in self.transports] or ["no transport"]
        return ", ".join([*parts, f"web UI {self.web_url or 'off'}",
                          f"retrain worker {'on' if self.retrain else 'off'}"])

    @property
    def web_url(self) -> str:
        """http://host:port of the web UI ('' when it is off)."""
        return self.web.url if self.web is not None else ""
