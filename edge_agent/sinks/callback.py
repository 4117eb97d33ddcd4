"""A Python callback sink, for embedding the agent (demos, tests): `Agent(config, callbacks=[fn])`."""

from __future__ import annotations

from collections.abc import Callable

from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import Sink


class CallbackSink(Sink):
    def __init__(self, callback: Callable[[Result], None]) -> None:
        self.callback = callback

    def emit(self, result: Result) -> None:
        self.callback(result)
