"""`jsonl`: one JSON object per result line, flushed per line so `tail -f` and a crash both see everything.

After a crash the file's tail tells which journalled results were already written (`holds`), so a restarted
agent writes each final result once; a line cut short by the crash is ended before anything is appended.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Literal, Self

from pydantic import Field

from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink, SinkSettings

TAIL_BYTES = 4 << 20  # a result is journalled for milliseconds: it can only be among the last lines written


class JsonlSinkConfig(SinkSettings):
    kind: Literal["jsonl"] = Field(title="One JSON object per result line in a file")
    path: Path = Field(title="File to append results to (relative: to the config file's folder)")

    def resolved(self, base: Path) -> Self:
        return self if self.path.is_absolute() else self.model_copy(update={"path": base / self.path})


@SINKS.register("jsonl")
class JsonlSink(Sink):
    def __init__(self, config: JsonlSinkConfig) -> None:
        self._path = config.path
        self._held: set[tuple[str, str]] | None = None  # read on the first `holds`: only a restart asks
        try:
            config.path.parent.mkdir(parents=True, exist_ok=True)
            cut = _ends_cut(config.path)
            self._file = open(config.path, "a", encoding="utf-8")
        except OSError as exc:  # a folder that is a file, a read-only disk: the config names a path to fix
            raise AgentConfigError(f"sinks[kind=jsonl].path {config.path}: cannot open for appending "
                                   f"({exc.filename}: {exc.strerror})") from None
        if cut:
            self._file.write("\n")
        self._lock = threading.Lock()

    def emit(self, result: Result) -> None:
        with self._lock:
            self._file.write(result.to_json() + "\n")
            self._file.flush()

    def holds(self, result: Result) -> bool:
        with self._lock:
            if self._held is None:
                self._file.flush()
                self._held = _tail_keys(self._path)
            return (result.sample_id, result.status.value) in self._held

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _ends_cut(path: Path) -> bool:
    """The file's last line has no newline: the crash cut it short."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as file:
        file.seek(-1, 2)
        return file.read(1) != b"\n"


def _tail_keys(path: Path) -> set[tuple[str, str]]:
    """(sample id, status) of the results in the file's last TAIL_BYTES."""
    with open(path, "rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - TAIL_BYTES))
        lines = file.read().split(b"\n")
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
    return keys
