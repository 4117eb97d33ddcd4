"""The outbox's SQLite file itself: which failures mean a damaged card, whose samples it holds, moving a damaged
file aside, and the transaction every write runs in (hgen.edge_agent.outbox says why each matters).
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

from hgen.edge_agent.errors import OutboxDamagedError, OutboxError, OutboxOwnerError

DAMAGE_CODES = frozenset({sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT})  # primary result codes of a damaged file
SIDECARS = ("-wal", "-shm", "-journal")  # SQLite's files beside the database, moved aside with it


def error_type(exc: sqlite3.Error) -> type[OutboxError]:
    """OutboxDamagedError when the file is not a database or its pages are malformed; OutboxError when it is busy,
    read-only or full."""
    code = getattr(exc, "sqlite_errorcode", None)
    return OutboxDamagedError if code is not None and (code & 0xFF) in DAMAGE_CODES else OutboxError


def lenient_text(data: bytes) -> str:
    """TEXT columns with bytes that are not UTF-8 (a damaged row) read as text the row's decoder then refuses,
    instead of failing the whole query."""
    return data.decode("utf-8", "replace")


def owner_error(path: Path, owner: str, device_id: str) -> OutboxOwnerError:
    return OutboxOwnerError(f"outbox.path: {path} holds the samples of device {owner!r}, not {device_id!r}: give "
                            f"each agent its own outbox.path (the file is left as it is for {owner!r})")


def inspect_outbox(path: Path) -> tuple[str | None, int]:
    """(owner device, samples waiting) of an existing outbox, read-only: `hgen-agent check` must not create the
    file or claim it for the device it checks. (None, 0) for a file not there yet."""
    if not Path(path).is_file():
        return None, 0
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            owner = db.execute("SELECT value FROM owner WHERE key = 'device_id'").fetchone() \
                if "owner" in tables else None
            (waiting,) = db.execute("SELECT COUNT(*) FROM samples").fetchone() if "samples" in tables else (0,)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise error_type(exc)(f"outbox.path: {path} cannot be read as an outbox ({exc})") from None
    return (None if owner is None else str(owner[0])), int(waiting)


def move_aside(path: Path) -> Path:
    """Rename `path` (and SQLite's files beside it) to `<name>.corrupt-<UTC time>`, kept for inspection; the
    sidecars go too, so a stale write-ahead log is never replayed into the fresh file."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():  # a second damaged file within the same second
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        path.rename(aside)
        for suffix in SIDECARS:
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                sidecar.rename(aside.with_name(aside.name + suffix))
    except OSError as exc:
        raise OutboxError(f"outbox.path: {path} is damaged and cannot be moved aside ({exc.strerror})") from None
    return aside


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one fsync per batch, not per sample."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type:
            self._rollback()
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:  # a failed COMMIT can leave the transaction open: the next BEGIN would fail for ever
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # SQLite ends the transaction itself on some errors (disk full, I/O)
            with suppress(sqlite3.Error):  # the original error is the one to report
                self._db.execute("ROLLBACK")
