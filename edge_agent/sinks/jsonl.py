"""`jsonl`: one JSON object per result line, flushed per line so `tail -f` and a crash both see everything."""

from __future__ import annotations

import threading

from hgen.edge_agent.config import SinkConfig
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink


@SINKS.register("jsonl")
class JsonlSink(Sink):
    def __init__(self, config: SinkConfig) -> None:
        assert config.path is not None
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(config.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def emit(self, result: Result) -> None:
        with self._lock:
            self._file.write(result.to_json() + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
