"""Run the Alembic migrations programmatically (no alembic.ini needed; the scripts ship in the package)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
PG_LOCK_KEY = 0x68676E68  # "hgnh": serialises concurrent hubs migrating one PostgreSQL


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision`; on PostgreSQL under an advisory lock so two hubs starting together are safe."""
    _run(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, step: Callable[[Config], None]) -> None:
    """Run `step` in one transaction. SQLite rebuilds a table to change its constraints (DROP TABLE): with foreign
    keys on, a table other rows point at (assignments, under answers) cannot be dropped, so they are off while the
    migration runs (SQLite ignores the switch inside a transaction) and every reference is checked before commit."""
    config = alembic_config()
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
                config.attributes["connection"] = connection
                step(config)
                if sqlite:
                    _check_references(connection)
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def _check_references(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        from hgen.hub.errors import KnowledgeBaseError

        raise KnowledgeBaseError(f"the migration would leave {len(broken)} broken reference(s), e.g. {broken[0]}; "
                                 "nothing was changed")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
