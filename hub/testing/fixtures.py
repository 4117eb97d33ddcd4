"""pytest fixtures for the hub tests; import them into a test module (`from ... import broker, pg_server`;
`kb_url` needs `pg_url` imported beside it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.hub.testing.services import Broker, PostgresServer, ServiceUnavailableError, mosquitto, postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        with postgres() as server:
            yield server
    except ServiceUnavailableError as exc:
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return pg_server.create_database(f"hgen_{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def kb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A knowledge base URL, once on a SQLite file and once on a fresh PostgreSQL database (import `pg_url` too)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def broker() -> Iterator[Broker]:
    try:
        with mosquitto() as running:
            yield running
    except ServiceUnavailableError as exc:
        pytest.skip(f"MQTT tests skipped: {exc}")
