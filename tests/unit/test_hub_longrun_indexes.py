"""Queries a hub runs all the time must not grow with the months it has run (review of a long-running hub). The
retrain trigger counts each model's human labels made since its last retrain on every reply and every 5 s; with
no index on when replies were made, SQLite read every sample ever stored (200,000: 0.2 s a count, more with the
images inline in those rows) and PostgreSQL every reply, to find the few hundred new ones. Migration 0016 indexes
replies by `created_at`: the plan reads only the replies since the cutoff. SQLite and PostgreSQL, the statement
as the trigger runs it (captured, with its parameters)."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import Engine, event, inspect

from hgen.hub.kb.migrate import downgrade, upgrade
from hgen.hub.kb.models import Batch, Reply, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain.records import RetrainStore
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)

MODEL, CAM = "lenet5", "cam-a"
SAMPLES = 20_000
T0 = 1_800_000_000.0


def fill(kb: KnowledgeBase) -> None:
    """SAMPLES answered samples of MODEL, one reply each, one every 10 s."""
    kb.register_devices([CAM])
    sample_rows, reply_rows = [], []
    for i in range(SAMPLES):
        sample_id, at = str(uuid.UUID(int=i)), T0 + 10 * i
        sample_rows.append(dict(
            id=sample_id, batch_id="b", device_id=CAM, bundle_name=MODEL, bundle_version="1.0.0", captured_at=at,
            hdnn_kind=1, image_format=1, height=28, width=28, channels=1, image_bytes=b"\x00" * 800, image_path=None,
            model_output=b"", confidence=0.5, difficulty=0.5, labour_reserved=1.0, m=1, aggregator="majority",
            transport="grpc", status="answered", assigned_count=1, answer_count=1, deadline=at + 600,
            received_at=at, closed_at=at + 60))
        reply_rows.append(dict(sample_id=sample_id, reply_id=str(uuid.uuid4()), device_id=CAM, status="answered",
                               aggregator="majority", class_id=i % 10, labour=1.0, payload=b"", transport="grpc",
                               delivered=True, created_at=at + 60))
    with kb.engine.begin() as connection:
        connection.execute(Batch.__table__.insert(), [dict(id="b", device_id=CAM, m=1, deadline=0.0,
                                                           labour_budget=0.0, labour_reserved=0.0, created_at=T0)])
        connection.execute(Sample.__table__.insert(), sample_rows)
        connection.execute(Reply.__table__.insert(), reply_rows)
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE")


def trigger_plan(kb: KnowledgeBase, store: RetrainStore) -> tuple[int, str]:
    """The trigger's count and the plan of the statement it ran."""
    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if "count(" in statement and "replies" in statement:
            seen.append((statement, parameters))

    event.listen(kb.engine, "before_cursor_execute", capture)
    try:
        count = store.new_label_count(MODEL)
    finally:
        event.remove(kb.engine, "before_cursor_execute", capture)
    statement, parameters = seen[-1]
    return count, explain(kb.engine, statement, parameters)


def explain(engine: Engine, statement: str, parameters: object) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)  # type: ignore[arg-type]
            return " | ".join(str(row[-1]) for row in rows)
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)  # type: ignore[arg-type]
        return " | ".join(str(row[0]) for row in rows)


def test_retrain_trigger_reads_only_the_new_replies(kb_url: str, tmp_path: Path) -> None:  # noqa: F811
    kb = KnowledgeBase.open(kb_url, image_dir=tmp_path / "img")
    try:
        fill(kb)
        store = RetrainStore(kb)
        cutoff = T0 + 10 * (SAMPLES - 300)  # the last retrain counted all but the last 300 or so
        run = store.create_run(MODEL, "cli", "1.0.0")
        with kb.engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE retrain_runs SET cutoff = {cutoff} WHERE id = {run.id}")
        count, plan = trigger_plan(kb, store)
        assert count == 305  # replies made after the cutoff (60 s after their sample)
        assert "ix_replies_created_at" in plan, plan
        assert "SCAN samples" not in plan and "Seq Scan on samples" not in plan and "Seq Scan on replies" not in plan
        downgrade(kb.engine, "0015")
        assert "ix_replies_created_at" not in {i["name"] for i in inspect(kb.engine).get_indexes("replies")}
        upgrade(kb.engine)
        assert "ix_replies_created_at" in {i["name"] for i in inspect(kb.engine).get_indexes("replies")}
    finally:
        kb.close()
