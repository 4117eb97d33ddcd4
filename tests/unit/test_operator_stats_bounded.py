"""The operator page reads a bounded number of rows whatever the hub's history. It used to load every answer ever
stored, joined with its reply, into Python, and on SQLite every transaction holds the write lock, so each page
load stalled every device's Submit and every annotator's answer for seconds (9.8 s of page at 900,000 answers).
Its figures now come from SQL aggregates over indexes (migration 0012) and a bounded window per annotator."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect

from hgen.hub.app import HubApp
from hgen.hub.crowd import together
from hgen.hub.gold import GOLD_DEVICE
from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import downgrade, upgrade
from hgen.hub.kb.models import (AnnotatorPause, AnswerRow, Assignment, Batch, GoldItem, Reply, Sample,
                                TaskEvent)
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.web import add_people, logged_in, web_hub
from hgen.hub.web import stats
from hgen.protos import hub_pb2

NOW = 1_700_000_000.0
INDEXES_0012 = {"answers": {"ix_answers_annotator_id", "ix_answers_submitted_at"},
                "task_events": {"ix_task_events_annotator_id"}, "samples": {"ix_samples_device_received"},
                "batches": {"ix_batches_device_budget"}}


def add_sample(kb: KnowledgeBase, device: str, *, budget: float = 5.0, label: int | None = 1,
               answers: tuple[tuple[str, int | None, float], ...] = (), bundle: str = "lenet5",
               at: float = NOW, gold: int | None = None) -> str:
    """A device's sample (or a gold one) with its batch, the given (annotator, class, seconds) answers and, when
    `label` is not None, an aggregated reply with that class."""
    sid = str(uuid.uuid4())
    with kb.session() as s:
        s.add(Batch(id=sid, device_id=device, m=len(answers), deadline=at + 600, labour_budget=budget,
                    labour_reserved=0.0, created_at=at))
        s.flush()
        s.add(Sample(id=sid, batch_id=sid, device_id=device, bundle_name=bundle, bundle_version="3", hdnn_kind=1,
                     image_format=1, height=28, width=28, channels=1, image_bytes=b"\0", model_output=b"",
                     confidence=0.4, difficulty=0.5, labour_reserved=1.0, m=len(answers), aggregator="majority",
                     transport="gold" if gold is not None else "grpc", status="answered", deadline=at + 600,
                     received_at=at))
        s.flush()
        if gold is not None:
            s.add(GoldItem(sample_id=sid, class_id=gold, created_at=at))
        for who, class_id, seconds in answers:
            task = str(uuid.uuid4())
            s.add(Assignment(id=task, sample_id=sid, annotator_id=who, status="answered", assigned_at=at))
            s.flush()
            payload = hub_pb2.Answer(task_id=task, sample_id=sid, annotator_id=who, class_id=class_id or 0)
            s.add(AnswerRow(task_id=task, sample_id=sid, annotator_id=who, class_id=class_id, latency_s=seconds,
                            payload=payload.SerializeToString(), operations=1, simulated=False, submitted_at=at))
        if label is not None and gold is None:
            s.add(Reply(sample_id=sid, reply_id=str(uuid.uuid4()), device_id=device, status="answered",
                        aggregator="majority", class_id=label, labour=1.0, payload=b"", transport="grpc",
                        delivered=True, created_at=at))
    return sid


def give_back(kb: KnowledgeBase, sample_id: str, who: str, status: str = "released", repeat_no: int = 0) -> None:
    """A task `who` gave back (skip) or let time out (`repeat_no`: a gold sample given to them again)."""
    task = str(uuid.uuid4())
    with kb.session() as s:
        s.add(Assignment(id=task, sample_id=sample_id, annotator_id=who, status=status, assigned_at=NOW,
                         repeat_no=repeat_no))
        s.flush()
        if status == "released":
            s.add(TaskEvent(task_id=task, sample_id=sample_id, annotator_id=who, kind="skip", latency_s=1.0, at=NOW))


def add_history(kb: KnowledgeBase, samples: int) -> None:
    """`samples` answered samples, two answers each, spread over two devices."""
    for i in range(samples):
        add_sample(kb, f"cam-{1 + i % 2}", answers=(("ann", 1, 2.0), ("bob", i % 3, 4.0)))


# --- the page reads a bounded number of rows -------------------------------------------------------------------


class RowCounter:
    """Counts the rows SQLite hands to Python for statements run in this thread (the request's; the hub's own
    threads, its sweeper among them, are left out)."""

    def __init__(self) -> None:
        self.rows = 0
        self.thread = threading.get_ident()

    def __call__(self, _conn: Any, cursor: sqlite3.Cursor, *_: Any) -> None:
        if threading.get_ident() == self.thread:
            cursor.row_factory = self._count

    def _count(self, _cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
        self.rows += 1
        return row


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, devices=["cam-1", "cam-2"]) as app:
        add_people(app, annotators=("ann", "bob"), operators=("op",))
        yield app


def rows_read_by_the_page(hub: HubApp, client: Any) -> int:
    counter = RowCounter()
    event.listen(hub.service.kb.engine, "after_cursor_execute", counter)
    try:
        assert client.get("/operator").status_code == 200
    finally:
        event.remove(hub.service.kb.engine, "after_cursor_execute", counter)
    return counter.rows


def test_operator_page_reads_the_same_rows_however_long_the_history(hub: HubApp,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(together, "WINDOW", 10)  # "Answering alike" reads the latest WINDOW class answers
    op = logged_in(hub, "op")
    kb = hub.service.kb
    add_history(kb, 20)
    short = rows_read_by_the_page(hub, op)
    add_history(kb, 300)  # 600 more answers, 300 more samples and batches
    long = rows_read_by_the_page(hub, op)
    assert long == short, f"the page read {long - short} more rows after 600 more answers"
    assert long < 60  # a row per device and per annotator, ten recent answers, WINDOW answers, a few counts


# --- what the page shows ---------------------------------------------------------------------------------------


@pytest.fixture
def kb(kb_url: str, tmp_path: Path) -> Iterator[KnowledgeBase]:  # noqa: F811
    base = KnowledgeBase.open(kb_url, image_dir=tmp_path / "images")
    try:
        base.register_devices(["cam-1", "cam-2", GOLD_DEVICE])
        for who in ("ann", "bob", "eve"):
            base.register_annotator(who)
        yield base
    finally:
        base.close()


def test_figures_are_all_time_counts_and_a_window_of_each_annotators_latest_answers(
        kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "WINDOW", 4)
    add_sample(kb, "cam-1", budget=5.0, bundle="old", answers=(("ann", 2, 9.0),), at=NOW - 7200)  # outside the window
    for label, given, seconds in ((1, 1, 1.0), (2, 2, 3.0), (3, 0, 5.0), (4, None, 7.0)):
        add_sample(kb, "cam-1", budget=5.0, label=label, answers=(("ann", given, seconds),))
    add_sample(kb, "cam-2", budget=0.0, label=None, answers=(("bob", 4, 6.0),))  # unlimited; no reply yet
    gold = add_sample(kb, GOLD_DEVICE, budget=0.0, gold=3, answers=(("ann", 3, 1.0), ("bob", 5, 2.0)))
    give_back(kb, gold, "eve")  # a miss
    give_back(kb, gold, "bob", status="timed_out", repeat_no=1)  # a miss, but no task event
    with kb.session() as s:
        s.add(AnnotatorPause(annotator_id="bob", reason="paused by an operator", paused_at=NOW))

    view = stats.overview(kb, NOW, tuple(f"c{i}" for i in range(10)))

    assert (view.queue_depth, view.answers_last_hour, view.window) == (0, 7, 4)
    ann, bob, eve = view.annotators
    # ann's last four: the gold answer (no reply: not comparable), 7 s (no class), 5 s (0 vs 3), 3 s (2 vs 2)
    assert (ann.answers, ann.released, ann.agreement, ann.median_seconds) == (6, 0, 0.5, 5.0)
    assert (ann.gold_accuracy, ann.gold_rated, ann.paused_reason) == (1.0, 1, None)
    assert (bob.answers, bob.released, bob.agreement, bob.median_seconds) == (2, 0, None, 6.0)
    assert (bob.gold_accuracy, bob.gold_rated, bob.paused_reason) == (0.0, 2, "paused by an operator")
    assert (eve.answers, eve.released, eve.agreement, eve.median_seconds) == (0, 1, None, None)
    assert (eve.gold_accuracy, eve.gold_rated) == (0.0, 1)
    cam1, cam2 = view.devices
    assert (cam1.device_id, cam1.labour_budget, cam1.bundle) == ("cam-1", 25.0, "lenet5 3")
    assert (cam2.device_id, cam2.labour_budget) == ("cam-2", None)
    assert [(who, label) for who, _, label, _ in view.recent_answers][:3] == [("bob", "c5"), ("ann", "c3"),
                                                                             ("bob", "c4")]
    assert len(view.recent_answers) == 8


def test_migration_0012_adds_and_removes_the_operator_page_indexes(kb_url: str) -> None:  # noqa: F811
    engine = make_engine(kb_url)
    try:
        upgrade(engine)
        assert all(INDEXES_0012[t] <= {i["name"] for i in inspect(engine).get_indexes(t)} for t in INDEXES_0012)
        downgrade(engine, "0011")
        assert not any(INDEXES_0012[t] & {i["name"] for i in inspect(engine).get_indexes(t)} for t in INDEXES_0012)
        upgrade(engine)
    finally:
        engine.dispose()
