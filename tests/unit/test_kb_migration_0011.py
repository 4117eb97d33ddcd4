"""Migration 0011 (gold repeats: a repeat number in the assignments' unique key) on a knowledge base that already
holds answered tasks, on SQLite and PostgreSQL. SQLite changes a constraint by rebuilding the table, and with
foreign keys on, dropping `assignments` (which answers and task events point at) failed: a hub with any answer
would not start after the upgrade. Rows are written as the 0010 schema has them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import current_revision, downgrade, upgrade
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)


def insert(connection: Connection, table: str, **given: Any) -> None:
    """A row with `given` values and a plain value for every other required column of the table as it is now."""
    values = dict(given)
    for column in inspect(connection).get_columns(table):
        name = column["name"]
        if name in values or column["nullable"] or column["default"] is not None or column.get("autoincrement") is True:
            continue
        kind = str(column["type"]).upper()
        values[name] = (0 if "INT" in kind else 0.0 if any(k in kind for k in ("DOUBLE", "FLOAT", "REAL"))
                        else False if "BOOL" in kind else b"" if any(k in kind for k in ("BLOB", "BYTEA", "BINARY"))
                        else "x")
    columns = ", ".join(values)
    connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + k for k in values)})"), values)


def test_0011_upgrades_and_downgrades_a_knowledge_base_with_answers(kb_url: str) -> None:  # noqa: F811
    engine = make_engine(kb_url)
    upgrade(engine, "0010")
    with engine.begin() as c:
        insert(c, "devices", id="cam-1")
        insert(c, "annotators", id="ann")
        insert(c, "batches", id="b1", device_id="cam-1")
        insert(c, "samples", id="s1", device_id="cam-1", batch_id="b1")
        insert(c, "assignments", id="t1", sample_id="s1", annotator_id="ann", status="answered")
        insert(c, "answers", id=1, task_id="t1", sample_id="s1", annotator_id="ann")
        insert(c, "task_events", id=1, task_id="t1", sample_id="s1", annotator_id="ann")
    engine.dispose()
    kb = KnowledgeBase.open(kb_url)  # what a hub's start does: migrate to the head
    try:
        with kb.engine.begin() as c:
            assert c.execute(text("SELECT id, repeat_no FROM assignments")).all() == [("t1", 0)]
            assert c.execute(text("SELECT task_id FROM answers")).all() == [("t1",)]
            insert(c, "assignments", id="t2", sample_id="s1", annotator_id="ann", status="answered", repeat_no=1)
        with pytest.raises(IntegrityError), kb.engine.begin() as c:  # one repeat number once per annotator
            insert(c, "assignments", id="t3", sample_id="s1", annotator_id="ann", status="open", repeat_no=1)
        downgrade(kb.engine, "0010")
        with kb.engine.connect() as c:
            assert c.execute(text("SELECT id FROM assignments")).all() == [("t1",)]  # the repeat cannot stay
            assert "repeat_no" not in {col["name"] for col in inspect(c).get_columns("assignments")}
        upgrade(kb.engine, "0011")  # not the head: later revisions (0012) follow
        assert current_revision(kb.engine) == "0011"
        if kb.engine.dialect.name == "sqlite":
            with kb.engine.connect() as c:
                assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # back on after the migration
    finally:
        kb.close()
