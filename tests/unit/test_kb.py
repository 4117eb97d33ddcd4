"""Knowledge base and task lifecycle, on SQLite (WAL) and on a real PostgreSQL started by the test run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import TaskClosedError, UnknownTaskError
from hgen.hub.kb.migrate import current_revision
from hgen.hub.kb.models import Assignment, Base, Reply, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.protos import hub_pb2
from sqlalchemy import text

DEVICE = "dev-1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hub(kb_url: str, tmp_path: Path, clock: Clock):
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": kb_url, "inline_image_max_bytes": 2000,
                                                                       "image_dir": str(tmp_path / "img")}})
    kb = KnowledgeBase.open(kb_url, image_dir=tmp_path / "img", inline_max_bytes=2000, clock=clock)
    service = HubService(config, kb, clock=clock)
    yield service
    service.close()


def answer(api, annotator: str, label: int) -> hub_pb2.SampleReply | None:
    task = api.next_task(annotator)
    assert task is not None
    return api.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=annotator, class_id=label,
                                            operations=2, latency_s=3.0, simulated=True))


def test_migration_matches_models_and_sqlite_uses_wal(hub: HubService) -> None:
    engine = hub.kb.engine
    from alembic.script import ScriptDirectory
    from hgen.hub.kb.migrate import alembic_config

    assert current_revision(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        if engine.dialect.name == "sqlite":
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_lifecycle_received_assigned_answered_with_reply_and_labour(hub: HubService, clock: Clock) -> None:
    api = hub.annotators
    for name in ("a", "b", "c"):
        api.register(name, simulated=True)
    sample = make_sample(DEVICE, confidence=0.5, top=7)
    result = hub.submit(make_request(DEVICE, [sample], m=3, now=clock.now), "grpc")
    assert result.accepted == [sample.sample_id] and not result.immediate
    assert answer(api, "a", 4) is None and answer(api, "b", 4) is None
    assert api.next_task("a") is None  # one task per annotator per sample
    reply = answer(api, "c", 7)
    assert reply.status == hub_pb2.REPLY_STATUS_ANSWERED and reply.aggregated.class_id == 4
    assert len(reply.answers) == 3 and reply.labour == 6.0 and reply.reply_id
    assert hub.kb.labour_of_device(DEVICE) == (6.0, 1)
    assert hub.kb.count(Sample, status="answered") == 1 and hub.kb.count(Reply) == 1


def test_deadline_gives_partial_then_expired_and_late_answers_are_refused(hub: HubService, clock: Clock) -> None:
    api = hub.annotators
    api.register("a")
    partial, expired = make_sample(DEVICE), make_sample(DEVICE)
    hub.submit(make_request(DEVICE, [partial, expired], m=3, deadline_s=10, now=clock.now), "grpc")
    first = api.next_task("a")
    api.submit_answer(hub_pb2.Answer(task_id=first.task_id, annotator_id="a", class_id=1, operations=1))
    late = api.next_task("a")
    clock.now += 11
    replies = {r.sample_id: r for r in hub.kb.expire_due()}
    assert replies[first.sample_id].status == hub_pb2.REPLY_STATUS_PARTIAL
    assert replies[first.sample_id].aggregated.class_id == 1
    assert replies[late.sample_id].status == hub_pb2.REPLY_STATUS_EXPIRED
    with pytest.raises(TaskClosedError):
        api.submit_answer(hub_pb2.Answer(task_id=late.task_id, annotator_id="a", class_id=1))
    with pytest.raises(UnknownTaskError):
        api.submit_answer(hub_pb2.Answer(task_id="no-such-task", annotator_id="a", class_id=1))
    assert hub.metrics.get("task_closed") == 1 and hub.metrics.get("unknown_task") == 1
    assert hub.kb.expire_due() == []  # closed once


def test_duplicate_sample_is_stored_once_and_gets_its_reply_again(hub: HubService, clock: Clock) -> None:
    api = hub.annotators
    api.register("a")
    sample = make_sample(DEVICE)
    request = make_request(DEVICE, [sample], m=1, now=clock.now)
    hub.submit(request, "mqtt")
    again = hub.submit(request, "mqtt")
    assert again.duplicates == [sample.sample_id] and again.immediate == []
    reply = answer(api, "a", 3)
    third = hub.submit(request, "mqtt")
    assert [r.reply_id for r in third.immediate] == [reply.reply_id]
    assert hub.kb.count(Sample) == 1 and hub.metrics.get("duplicate_sample") == 2


def test_labour_budget_of_the_request_is_enforced(hub: HubService, clock: Clock) -> None:
    samples = [make_sample(DEVICE, confidence=0.5) for _ in range(3)]  # d = 2, m = 2: L0 = 4 each
    result = hub.submit(make_request(DEVICE, samples, m=2, budget=8.0, now=clock.now), "grpc")
    assert len(result.accepted) == 2
    assert [r.reject_reason for r in result.immediate] == [hub_pb2.REJECT_REASON_LABOUR_BUDGET]
    assert hub.kb.labour_of_batch(result_batch(hub)) == (8.0, 8.0)
    assert hub.metrics.get("labour_budget_exceeded") == 1


def result_batch(hub: HubService) -> str:
    with hub.kb.session() as s:
        return s.scalars(text("SELECT id FROM batches")).one()


def test_large_images_go_to_disk_small_ones_inline(hub: HubService, clock: Clock) -> None:
    small, big = make_sample(DEVICE, image=png_image(8)), make_sample(DEVICE, image=png_image(96))
    hub.submit(make_request(DEVICE, [small, big], m=1, now=clock.now), "grpc")
    with hub.kb.session() as s:
        rows = {row.id: row for row in s.query(Sample)}
    assert rows[small.sample_id].image_bytes and rows[small.sample_id].image_path is None
    assert rows[big.sample_id].image_bytes is None
    hub.annotators.register("a")
    hub.annotators.max_open = 2  # "a" holds both tasks at once (tasks.max_open_per_annotator is 1 by default)
    tasks = [hub.annotators.next_task("a") for _ in range(2)]
    assert {t.image.data for t in tasks} == {small.image.data, big.image.data}


def test_concurrent_annotators_never_overfill_a_sample(hub: HubService, clock: Clock) -> None:
    api = hub.annotators
    api.max_open = 2  # each worker holds two tasks at once (tasks.max_open_per_annotator is 1 by default)
    names = [f"w{i}" for i in range(6)]
    for name in names:
        api.register(name)
    hub.submit(make_request(DEVICE, [make_sample(DEVICE) for _ in range(4)], m=2, now=clock.now), "grpc")
    got: list = []
    threads = [threading.Thread(target=lambda n=n: got.extend(filter(None, [api.next_task(n), api.next_task(n)])))
               for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8  # 4 samples x m=2 slots, no more
    assert hub.kb.count(Assignment) == 8


def test_bundle_records_keep_where_devices_fetch_them(tmp_path):
    from hgen.hub.kb.store import BundleRecord, KnowledgeBase

    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    kb.add_bundle(BundleRecord("lenet5", "1.0.1", "ab" * 32, 10, b"", "/x.hgb", 1.0, "grpc://hub:50051"))
    assert kb.bundle("lenet5").fetch_uri == "grpc://hub:50051"
