"""pytest fixtures for the hub tests; import them into a test module (`from ... import broker, pg_server`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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


@pytest.fixture
def broker() -> Iterator[Broker]:
    try:
        with mosquitto() as running:
            yield running
    except ServiceUnavailableError as exc:
        pytest.skip(f"MQTT tests skipped: {exc}")
