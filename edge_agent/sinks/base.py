"""The sink contract; a failing sink is logged and counted, never allowed to stop the pipeline."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from pydantic import Field

from hgen.edge_agent.results import Result, ResultStatus
from hgen.runtime.config import StrictModel
from hgen.runtime.registry import Registry

log = logging.getLogger(__name__)


class SinkSettings(StrictModel):
    """What every sink's config has; each sink's module adds its `kind` and its own fields."""

    updates_only: bool = Field(False, title="Only emit results that changed or were escalated")

    def check_files(self) -> None:
        """The files it names load (`hgen-agent check`): none by default."""

    def resolved(self, base: Path) -> Self:
        """The same settings with relative file paths made absolute against `base` (the config file's folder)."""
        del base
        return self


class Sink(ABC):
    updates_only = False

    def wants(self, result: Result) -> bool:
        return not self.updates_only or result.status is not ResultStatus.MODEL

    @abstractmethod
    def emit(self, result: Result) -> None:
        """Deliver one result (called from several threads, one result at a time)."""

    def lost(self) -> int:
        """Results this sink took and later gave up on (a webhook that stayed away): the agent adds them to
        sink_errors. Sinks that deliver or refuse at once lose none."""
        return 0

    def holds(self, result: Result) -> bool:
        """Whether this sink already has `result` (same sample, same status). Asked only after a crash, for a
        result journalled before it; False means "cannot tell", and the result is delivered again."""
        return False

    def close(self) -> None:
        """Flush and release."""


SinkFactory = Callable[[Any], Sink]  # the sink's own config (a SinkSettings with its kind) -> the open sink
SINKS: Registry[SinkFactory] = Registry("result sink", package="hgen.edge_agent.sinks")


def open_sinks(configs: Sequence[Any]) -> list[Sink]:
    """Open each configured sink by its config's `kind` (agent.yaml's `sinks`, validated as `SinkConfig`)."""
    sinks: list[Sink] = []
    try:
        for config in configs:
            sink = SINKS.get(config.kind)(config)
            sink.updates_only = config.updates_only
            sinks.append(sink)
    except BaseException:
        close_sinks(sinks)  # the ones already open are not leaked by a later sink's failure
        raise
    return sinks


def close_sinks(sinks: Sequence[Sink]) -> None:
    """Close every sink; one that fails to close is logged, and the others (and the caller's own shutdown) go on."""
    for sink in sinks:
        try:
            sink.close()
        except Exception:
            log.exception("result sink %s failed to close", type(sink).__name__)
