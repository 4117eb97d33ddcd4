"""Engines for the knowledge base: SQLite in WAL mode by default, PostgreSQL by URL.

SQLite transactions start with BEGIN IMMEDIATE: a deferred transaction that reads then writes can fail with
"database is locked" at once, whatever the busy timeout; taking the write lock up front makes writers queue.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hgen.hub.errors import KnowledgeBaseError

BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite files get WAL, NORMAL sync, foreign keys and immediate transactions."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise KnowledgeBaseError(f"knowledge_base.url is not a database URL: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=8)
    if not parsed.database or parsed.database == ":memory:":
        raise KnowledgeBaseError("SQLite knowledge base needs a file path (sqlite:///path/hub.db): "
                                 "several threads and processes share it")
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def _sqlite_on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_on_begin(connection) -> None:  # type: ignore[no-untyped-def]
    connection.exec_driver_sql("BEGIN IMMEDIATE")
