"""`jsonl`: one JSON object per result line, flushed per line so `tail -f` and a crash both see everything.

After a crash the file's tail tells which journalled results were already written (`holds`), so a restarted
agent writes each final result once; a line cut short by the crash is ended before anything is appended.

The file is bounded: a line that would take it past `max_bytes` first rotates it as logrotate numbers files
(results.jsonl -> results.jsonl.1 -> ... -> .`keep`, the oldest deleted), so a device writing a line per frame
does not fill its card. An external logrotate works too: before each line the sink checks that the path still
names the file it has open (same device and inode) and reopens it if not, so lines never go on into a renamed
(or deleted) file. Rotation happens only between lines: a line is always whole in one file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal, Self

from pydantic import Field

from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink, SinkSettings

TAIL_BYTES = 4 << 20  # a result is journalled for milliseconds: it can only be among the last lines written
log = logging.getLogger(__name__)


class JsonlSinkConfig(SinkSettings):
    kind: Literal["jsonl"] = Field(title="One JSON object per result line in a file")
    path: Path = Field(title="File to append results to (relative: to the config file's folder)")
    max_bytes: int | None = Field(64 << 20, ge=1024, title="Rotate the file before a line would take it past this "
                                                           "size (None: never; an external logrotate may still "
                                                           "rename it, the sink reopens the path)")
    keep: int = Field(4, ge=1, title="Rotated files kept (path.1 the newest ... path.<keep>); the oldest is deleted. "
                                     "A file already past max_bytes at start is kept aside as path.kept-<time>")

    def resolved(self, base: Path) -> Self:
        return self if self.path.is_absolute() else self.model_copy(update={"path": base / self.path})


@SINKS.register("jsonl")
class JsonlSink(Sink):
    def __init__(self, config: JsonlSinkConfig) -> None:
        self._path = config.path
        self._max_bytes = config.max_bytes
        self._keep = config.keep
        self._held: set[tuple[str, str]] | None = None  # read on the first `holds`: only a restart asks
        self._lock = threading.Lock()
        try:
            config.path.parent.mkdir(parents=True, exist_ok=True)
            _keep_aside_if_over(config.path, config.max_bytes)
            self._file = _open_appending(config.path)
        except OSError as exc:  # a folder that is a file, a read-only disk: the config names a path to fix
            raise AgentConfigError(f"sinks[kind=jsonl].path {config.path}: cannot open for appending "
                                   f"({exc.filename}: {exc.strerror})") from None

    def emit(self, result: Result) -> None:
        line = (result.to_json() + "\n").encode("utf-8")
        with self._lock:
            self._follow_path()
            if self._overflows(len(line)):
                self._rotate()
            self._file.write(line)
            self._file.flush()

    def holds(self, result: Result) -> bool:
        with self._lock:
            if self._held is None:
                self._file.flush()
                self._held = _tail_keys([self._path, *(_rotated(self._path, n) for n in range(1, self._keep + 1))])
            return (result.sample_id, result.status.value) in self._held

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _overflows(self, size: int) -> bool:
        """A line of `size` bytes would take a non-empty file past max_bytes (a longer line gets a file alone)."""
        written = os.fstat(self._file.fileno()).st_size
        return self._max_bytes is not None and written > 0 and written + size > self._max_bytes

    def _follow_path(self) -> None:
        """Reopen the path when it no longer names the open file (logrotate renamed or deleted it), so new lines
        go where `tail -F` and the next rotation look, not into the renamed file."""
        try:
            named = os.stat(self._path)
        except FileNotFoundError:
            named = None
        opened = os.fstat(self._file.fileno())
        if named is None or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            self._reopen()

    def _rotate(self) -> None:
        """Shift path -> path.1 -> ... -> path.<keep> (the oldest deleted), then start an empty file at path."""
        _rotated(self._path, self._keep).unlink(missing_ok=True)
        for n in range(self._keep - 1, 0, -1):
            if _rotated(self._path, n).exists():
                _rotated(self._path, n).replace(_rotated(self._path, n + 1))
        self._path.replace(_rotated(self._path, 1))
        self._reopen()

    def _reopen(self) -> None:
        """Open the path afresh; the old file is closed only once the new one is open, so a failure (raised, and
        counted by the agent as a sink error) leaves the sink able to try again with the next line."""
        file = _open_appending(self._path)
        self._file.close()
        self._file = file
        log.info("results file %s reopened", self._path)


def _keep_aside_if_over(path: Path, max_bytes: int | None) -> None:
    """A file already past max_bytes at start (written before rotation existed, or under a larger max_bytes) is
    renamed once to `<path>.kept-<UTC time>`, out of the rotation's reach: rotating it would delete a device's
    whole history `keep` rotations after an upgrade."""
    if max_bytes is None or not path.is_file() or path.stat().st_size <= max_bytes:
        return
    aside = path.with_name(f"{path.name}.kept-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}")
    path.replace(aside)
    log.warning("results file %s was past sinks.jsonl.max_bytes: kept as %s (never rotated away)", path, aside)


def _rotated(path: Path, n: int) -> Path:
    """logrotate's name for the n-th newest rotated file: results.jsonl.1, results.jsonl.2, ..."""
    return path.with_name(f"{path.name}.{n}")


def _open_appending(path: Path) -> BinaryIO:
    """Open `path` for appending; a last line cut short (by a crash) is ended first, so no line is ever joined."""
    file = open(path, "ab")  # noqa: SIM115 (the sink keeps it open; closed here only on failure)
    try:
        if _ends_cut(path):
            file.write(b"\n")
            file.flush()
    except OSError:
        file.close()
        raise
    return file


def _ends_cut(path: Path) -> bool:
    """The file's last line has no newline: the crash cut it short."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as file:
        file.seek(-1, 2)
        return file.read(1) != b"\n"


def _tail_keys(paths: list[Path]) -> set[tuple[str, str]]:
    """(sample id, status) of the results in the last TAIL_BYTES written: the current file's tail and, when it is
    shorter than that (rotated since), the ends of the files rotated before it, newest first."""
    keys: set[tuple[str, str]] = set()
    budget = TAIL_BYTES
    for path in paths:
        if budget <= 0:
            break
        taken, lines = _tail_lines(path, budget)
        keys |= _keys(lines)
        budget -= taken
    return keys


def _tail_lines(path: Path, budget: int) -> tuple[int, list[bytes]]:
    """The whole lines in the last `budget` bytes of `path` (none if it is missing), and how many bytes that was."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - budget))
            lines = file.read().split(b"\n")
    except FileNotFoundError:
        return 0, []
    if size > budget:
        lines = lines[1:]  # the first one is only the end of a line
    return min(size, budget), lines


def _keys(lines: list[bytes]) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by the crash (or the empty one after the last newline)
            continue
        if isinstance(row, dict) and row.get("sample_id"):
            keys.add((str(row["sample_id"]), str(row.get("status"))))
    return keys
