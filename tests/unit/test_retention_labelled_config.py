"""knowledge_base.keep_labelled_images: its config (0 by default; fewer than retrain.max_labels refused while
retraining is enabled, naming both keys) and its index (every query of a round reads ix_samples_labelled_images,
migration 0017, never the whole samples table). SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, inspect, text

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import HubConfigError
from hgen.hub.kb.migrate import downgrade, upgrade
from hgen.hub.kb.retention_labelled import LabelledImageRetention
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)

INDEX = "ix_samples_labelled_images"


def retrain(max_labels: int, enabled: bool = True) -> dict[str, object]:
    return {"enabled": enabled, "store_dir": "/tmp/store", "signing_key": "/tmp/key.pem", "max_labels": max_labels}


def test_keep_labelled_images_defaults_to_keeping_all_and_must_cover_what_a_retrain_reads() -> None:
    assert parse_hub_config({}).knowledge_base.keep_labelled_images == 0
    with pytest.raises(HubConfigError, match="keep_labelled_images"):
        parse_hub_config({"knowledge_base": {"keep_labelled_images": -1}})
    with pytest.raises(HubConfigError) as refused:
        parse_hub_config({"knowledge_base": {"keep_labelled_images": 999}, "retrain": retrain(1000)})
    said = str(refused.value)
    assert "knowledge_base.keep_labelled_images (999)" in said and "retrain.max_labels (1000)" in said, said
    with pytest.raises(HubConfigError, match=r"retrain\.max_labels \(20000\)"):  # the default max_labels
        parse_hub_config({"knowledge_base": {"keep_labelled_images": 5000},
                          "retrain": {k: v for k, v in retrain(0).items() if k != "max_labels"}})
    assert parse_hub_config({"knowledge_base": {"keep_labelled_images": 1000},
                             "retrain": retrain(1000)}).knowledge_base.keep_labelled_images == 1000
    assert parse_hub_config({"knowledge_base": {"keep_labelled_images": 0}, "retrain": retrain(1000)})
    # without retraining nothing reads them: any N
    assert parse_hub_config({"knowledge_base": {"keep_labelled_images": 5},
                             "retrain": retrain(1000, enabled=False)}).knowledge_base.keep_labelled_images == 5


def plan(kb: KnowledgeBase, sql: str, params: object) -> str:
    with kb.engine.connect() as connection:
        if kb.engine.dialect.name == "sqlite":
            return " | ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
        connection.exec_driver_sql("SET enable_seqscan = off")
        return " | ".join(str(row[0]) for row in connection.exec_driver_sql(f"EXPLAIN {sql}", params))


def test_a_round_reads_the_labelled_images_index(kb_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Finding the models, each model's boundary (its newest N), the count and a batch: SQLite's planner (no
    statistics) takes the partial index for each, not the status index nor a scan of the table; PostgreSQL can
    (its planner chooses by statistics). Migration 0017 adds and removes it."""
    clock = Clock()
    kb = KnowledgeBase.open(kb_url, image_dir=tmp_path / "img", inline_max_bytes=2000, clock=clock)
    try:
        statements: list[tuple[str, object]] = []
        event.listen(kb.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, parameters, context, many: statements.append((statement,
                                                                                                   parameters)))
        retention = LabelledImageRetention(kb, 3, lambda name, n: None, clock)
        from hgen.hub.kb import retention_labelled

        retention_labelled.models_with_images(kb)
        retention_labelled.oldest_kept(kb, "lenet5", 3)
        scope = retention_labelled.Scope("lenet5", clock.now, 1)
        retention_labelled.remove_labelled_images(kb, scope)
        assert not retention.run_if_due()
        ours = [(s, p) for s, p in statements if "FROM samples" in s and "'answered', 'partial'" in s]
        assert len(ours) >= 4, statements
        for sql, params in ours:
            found = plan(kb, sql, params)
            samples_steps = [step for step in found.split(" | ") if " samples" in step]
            assert INDEX in found and "Seq Scan on samples" not in found, (sql, found)
            assert all(INDEX in step for step in samples_steps if "SCAN samples" in step or "SEARCH samples" in step), (
                sql, found)
        engine = kb.engine
        downgrade(engine, "0016")
        assert INDEX not in {i["name"] for i in inspect(engine).get_indexes("samples")}
        upgrade(engine)
        assert INDEX in {i["name"] for i in inspect(engine).get_indexes("samples")}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM samples")).scalar() == 0
    finally:
        kb.close()
