"""The operator page's "Storage" section: what the hub's disk and database hold.

The knowledge base's size is one `stat` of the SQLite file (and its `-wal`) or PostgreSQL's `pg_database_size`;
`knowledge_base.image_dir` and `retrain.store_dir` are walked. A months-old image folder holds millions of files, so
a walk stops after `MAX_ENTRIES` entries or `MAX_SECONDS` (the page then says "at least"), symlinks are never
followed, and the figures are kept for `TTL_S` seconds per hub process: page loads within a minute cost nothing, and
one after that at most one bounded walk per folder (a second request meanwhile waits for it, and never walks too).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from hgen.hub.kb.store import KnowledgeBase

log = logging.getLogger(__name__)

TTL_S = 60.0  # how long one measurement is shown
MAX_ENTRIES = 200_000  # files and folders one walk visits at most
MAX_SECONDS = 2.0  # how long one walk runs at most


@dataclass(frozen=True)
class FolderSize:
    """A folder's regular files: their count and bytes; `complete` False when the walk stopped at its bound."""

    path: str
    files: int
    bytes: int
    complete: bool = True
    error: str | None = None  # why it could not be read (not a folder, no permission)
    missing: bool = False  # not created yet (no image or version written so far)


@dataclass(frozen=True)
class DatabaseSize:
    what: str  # "SQLite file /x/hub.db (+ its -wal)", "PostgreSQL database", ...
    bytes: int | None  # None: not known for this database, or it failed (`error`)
    error: str | None = None


@dataclass(frozen=True)
class Storage:
    database: DatabaseSize
    images: FolderSize | None  # None: no image folder (every image in the database)
    store: FolderSize | None  # None: retrain.store_dir not set
    measured_at: float  # the gauge's clock
    max_entries: int
    max_seconds: float


def folder_size(path: Path, max_entries: int = MAX_ENTRIES, max_seconds: float = MAX_SECONDS,
                clock: Callable[[], float] = time.monotonic) -> FolderSize:
    """Count and sum the regular files under `path`, without following symlinks, visiting at most `max_entries`
    entries and for at most `max_seconds`."""
    if not os.path.lexists(path):
        return FolderSize(str(path), 0, 0, missing=True)
    if not os.path.isdir(path):
        return FolderSize(str(path), 0, 0, error="not a folder")
    deadline = clock() + max_seconds
    files = total = seen = 0
    pending = [str(path)]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries or clock() > deadline:
                        return FolderSize(str(path), files, total, complete=False)
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
                    elif stat.S_ISREG(info.st_mode):
                        files += 1
                        total += info.st_size
        except OSError as exc:
            if folder == str(path):
                return FolderSize(str(path), 0, 0, error=exc.strerror or str(exc))
            continue  # a subfolder removed meanwhile, or unreadable: counted as empty
    return FolderSize(str(path), files, total)


def database_size(kb: KnowledgeBase) -> DatabaseSize:
    """SQLite: the file and its write-ahead log; PostgreSQL: `pg_database_size` of the current database."""
    url = kb.engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database:
            return DatabaseSize("SQLite", None, "no file")
        path = Path(url.database)
        sizes = [os.stat(p).st_size for p in (path, Path(f"{path}-wal")) if os.path.exists(p)]
        return DatabaseSize(f"SQLite file {path} (with its -wal)", sum(sizes) if sizes else None,
                            None if sizes else "the file is missing")
    if url.get_backend_name() == "postgresql":
        try:
            with kb.engine.connect() as connection:
                size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar()
        except SQLAlchemyError as exc:
            return DatabaseSize("PostgreSQL database", None, str(getattr(exc, "orig", None) or exc)[:200])
        return DatabaseSize(f"PostgreSQL database {url.database}", int(size or 0))
    return DatabaseSize(f"{url.get_backend_name()} database", None, "its size is not measured for this database")


class StorageGauge:
    """Measures the storage at most once per `ttl_s` (one per web app: nothing global)."""

    def __init__(self, kb: KnowledgeBase, image_dir: Path | None, store_dir: Path | None, *, ttl_s: float | None = None,
                 max_entries: int | None = None, max_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kb, self.image_dir, self.store_dir, self.clock = kb, image_dir, store_dir, clock
        self.ttl_s = TTL_S if ttl_s is None else ttl_s
        self.max_entries = MAX_ENTRIES if max_entries is None else max_entries
        self.max_seconds = MAX_SECONDS if max_seconds is None else max_seconds
        self._lock = threading.Lock()
        self._last: Storage | None = None

    def read(self) -> Storage:
        """The last measurement while younger than `ttl_s`, else a new one."""
        with self._lock:
            if self._last is None or self.clock() - self._last.measured_at >= self.ttl_s:
                self._last = self._measure()
            return self._last

    def _measure(self) -> Storage:
        def walk(path: Path | None) -> FolderSize | None:
            return None if path is None else folder_size(path, self.max_entries, self.max_seconds, self.clock)

        return Storage(database_size(self.kb), walk(self.image_dir), walk(self.store_dir), self.clock(),
                       self.max_entries, self.max_seconds)


def human_bytes(size: int | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as `du --si`); None -> '-'."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
