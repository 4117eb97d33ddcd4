"""`jsonl`: one JSON object per result line, flushed per line so `tail -f` and a crash both see everything.

After a crash the file's tail tells which journalled results were already written (`holds`), so a restarted
agent writes each final result once; a line cut short by the crash is ended before anything is appended.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from hgen.edge_agent.config import SinkConfig
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink

TAIL_BYTES = 4 << 20  # a result is journalled for milliseconds: it can only be among the last lines written


@SINKS.register("jsonl")
class JsonlSink(Sink):
    def __init__(self, config: SinkConfig) -> None:
        assert config.path is not None
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self._tail = _tail_keys(config.path)
        self._file = open(config.path, "a", encoding="utf-8")
        if self._tail.cut:
            self._file.write("\n")
        self._lock = threading.Lock()

    def emit(self, result: Result) -> None:
        with self._lock:
            self._file.write(result.to_json() + "\n")
            self._file.flush()

    def holds(self, result: Result) -> bool:
        return (result.sample_id, result.status.value) in self._tail.keys

    def close(self) -> None:
        with self._lock:
            self._file.close()


class _Tail:
    """(sample id, status) of the results in the file's last TAIL_BYTES, and whether its last line was cut."""

    def __init__(self, keys: set[tuple[str, str]], cut: bool) -> None:
        self.keys, self.cut = keys, cut


def _tail_keys(path: Path) -> _Tail:
    if not path.exists() or path.stat().st_size == 0:
        return _Tail(set(), False)
    with open(path, "rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - TAIL_BYTES))
        data = file.read()
    lines = data.split(b"\n")
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first one is only the end of a line
    keys: set[tuple[str, str]] = set()
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by the crash (or the empty one after the last newline)
            continue
        if isinstance(row, dict) and row.get("sample_id"):
            keys.add((str(row["sample_id"]), str(row.get("status"))))
    return _Tail(keys, not data.endswith(b"\n"))
