"""The sink contract; a failing sink is logged and counted, never allowed to stop the pipeline."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from hgen.edge_agent.config import SinkConfig
from hgen.edge_agent.results import Result, ResultStatus
from hgen.runtime.registry import Registry, discover


class Sink(ABC):
    updates_only = False

    def wants(self, result: Result) -> bool:
        return not self.updates_only or result.status is not ResultStatus.MODEL

    @abstractmethod
    def emit(self, result: Result) -> None:
        """Deliver one result (called from several threads, one result at a time)."""

    def holds(self, result: Result) -> bool:
        """Whether this sink already has `result` (same sample, same status). Asked only after a crash, for a
        result journalled before it; False means "cannot tell", and the result is delivered again."""
        return False

    def close(self) -> None:
        """Flush and release."""


SinkFactory = Callable[[SinkConfig], Sink]
SINKS: Registry[SinkFactory] = Registry("result sink")


def open_sinks(configs: Sequence[SinkConfig]) -> list[Sink]:
    discover("hgen.edge_agent.sinks")
    sinks: list[Sink] = []
    for config in configs:
        sink = SINKS.get(config.kind)(config)
        sink.updates_only = config.updates_only
        sinks.append(sink)
    return sinks
