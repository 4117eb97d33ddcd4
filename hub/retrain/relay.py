"""The relay: a hub thread that tells devices of bundles another process recorded.

`hgen-hub retrain`, `rollback` and `publish` run as commands, and several hubs may share one knowledge base: their
bundles are recorded there, where gRPC WatchUpdates streams find them by themselves, but an MQTT device hears of a
bundle only from a retained notice on its topic. Every `poll_s` the relay announces, through this hub's transports
and with its fetch address, the newest recorded version of each configured model's bundles that this hub has not
announced. At start that re-asserts every retained notice. It runs on its own thread, beside the retrain worker
(a retrain can take hours) and whether or not this hub retrains.
"""

from __future__ import annotations

import logging

from hgen.hub.retrain.pipeline import RetrainPipeline
from hgen.hub.retrain.publish import HubPublisher
from hgen.hub.retrain.ticker import Ticker
from hgen.runtime.errors import HGenError

log = logging.getLogger(__name__)


class BundleRelay:
    """Announces what other processes recorded; a model whose routes cannot be read yet is tried again each poll."""

    def __init__(self, pipeline: RetrainPipeline, publisher: HubPublisher, poll_s: float = 5.0) -> None:
        self.pipeline = pipeline
        self.publisher = publisher
        self.poll_s = poll_s
        self._routes: dict[str, dict[str, tuple[str, ...]]] = {}  # model -> bundle name -> devices
        self._warned: set[str] = set()
        self._ticker = Ticker(self._round, poll_s, "hub-bundle-relay", first_now=True)

    def start(self) -> BundleRelay:
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._ticker.stop()

    def check(self) -> list[str]:
        """One round: "name version" of each bundle announced."""
        routes: dict[str, tuple[str, ...]] = {}
        for model in self.pipeline.config.models:
            if model.name not in self._routes:
                try:
                    self._routes[model.name] = self.pipeline.routes_of(model.name)
                except HGenError as exc:  # e.g. its configured bundle is being replaced: next round
                    if str(exc) not in self._warned:  # once per reason, not every poll
                        self._warned.add(str(exc))
                        log.warning("cannot route %s's bundles yet: %s", model.name, exc)
                    continue
            routes.update(self._routes[model.name])
        return self.publisher.announce_recorded(routes)

    def _round(self) -> None:
        try:
            for said in self.check():
                log.info("announced %s (recorded by another process, or before this hub started)", said)
        except Exception:  # a database hiccup: the next round tries again
            log.exception("announcing recorded bundles failed")
