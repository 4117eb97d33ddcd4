"""Per-device limits and fair hand-out across hub processes sharing one knowledge base (two HubService instances
with their own KnowledgeBase, as two processes have). Each process counted a device's image bytes in memory, so a
device spreading its samples over N hubs stored up to N hourly budgets; two hubs taking a device's requests at once
both passed the last sample of a cap; and each hub kept its own hand-out turn, so two hubs both handed out the
device served last. On SQLite and PostgreSQL; the forced race on PostgreSQL (SQLite serialises every write)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event, text

from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import DeviceIntakeMinute, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService, SubmitResult
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.services import answer_next, closing_maker, wait_until
from hgen.protos import hub_pb2

A, B = "cam-a", "cam-b"
HOUR_S = 3600.0
MakeHub = Callable[..., HubService]
IMAGE = png_image(size=64, seed=3)  # every sample here carries it: one size, stored as a file (over 2,000 bytes)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_hub(url: str, tmp_path: Path, clock: Clock, **limits: object) -> HubService:
    """One hub process's service and knowledge base (its own engine), without transports."""
    config = parse_hub_config({"devices": [A, B], "limits": limits,
                               "knowledge_base": {"url": url, "inline_image_max_bytes": 2000,
                                                  "image_dir": str(tmp_path / "img")}})
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", inline_max_bytes=2000, clock=clock)
    return HubService(config, kb, clock=clock)


@pytest.fixture
def hubs(kb_url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    """Hubs sharing one knowledge base, on SQLite and on PostgreSQL."""
    yield from closing_maker(functools.partial(open_hub, kb_url, tmp_path, clock))


@pytest.fixture
def pg_hubs(pg_url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    yield from closing_maker(functools.partial(open_hub, pg_url, tmp_path, clock))


def submit(hub: HubService, clock: Clock, device: str = A, batch_id: str | None = None) -> SubmitResult:
    request = make_request(device, [make_sample(device, image=IMAGE)], m=1, now=clock.now, batch_id=batch_id)
    return hub.submit(request, "grpc")


def reasons(result: SubmitResult) -> list[str]:
    return [hub_pb2.RejectReason.Name(r.reject_reason) for r in result.immediate
            if r.status == hub_pb2.REPLY_STATUS_REJECTED]


def test_two_hubs_store_no_more_than_one_image_budget_of_a_device(hubs: MakeHub, clock: Clock) -> None:
    """The budget holds two images. Hub B counted only what it stored itself (and what the database held at its
    first sample of the device): it took a third image after hub A had stored the second."""
    size = len(IMAGE.data)
    assert size > 2000
    hub_a, hub_b = (hubs(max_image_bytes_per_device_per_hour=2 * size) for _ in range(2))
    assert len(submit(hub_b, clock).accepted) == 1
    clock.now += 1
    assert len(submit(hub_a, clock).accepted) == 1
    clock.now += 1
    for hub in (hub_b, hub_a):
        refused = submit(hub, clock)
        assert refused.accepted == [] and reasons(refused) == ["REJECT_REASON_TOO_LARGE"]
        assert hub.metrics.get("device_image_budget") == 1
    assert len(submit(hub_b, clock, B).accepted) == 1  # per device
    clock.now += HOUR_S  # an hourly budget
    assert len(submit(hub_b, clock).accepted) == 1


def waiting_on_locks(hub: HubService) -> int:
    with hub.kb.engine.connect() as c:
        return int(c.scalar(text("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND wait_event_type = 'Lock'")))


@pytest.mark.parametrize("limits, reason", [
    ({"max_image_bytes_per_device_per_hour": 2 * len(IMAGE.data), "max_open_samples_per_device": 0},
     "REJECT_REASON_TOO_LARGE"),
    ({"max_open_samples_per_device": 2}, "REJECT_REASON_LABOUR_BUDGET"),
    ({"max_samples_per_device_per_hour": 2, "max_open_samples_per_device": 0}, "REJECT_REASON_LABOUR_BUDGET"),
], ids=["image_budget", "open_samples", "samples_per_hour"])
def test_two_hubs_racing_for_a_devices_last_room_store_one_sample(pg_hubs: MakeHub, clock: Clock,
                                                                  limits: dict[str, int], reason: str) -> None:
    """One sample stored, room for one more; two hubs get one each at once (in the same batch). The overlap is
    forced: a third transaction holds the device's row and the batch's while both requests start, so each has read
    the device's counts and found room before either stores; once both wait on a lock (or one finished) it lets
    go. Both were stored: the counts were read, and checked, before the transaction that stores the sample."""
    hub_a, hub_b = pg_hubs(**limits), pg_hubs(**limits)
    batch = str(uuid.uuid4())
    assert len(submit(hub_a, clock, batch_id=batch).accepted) == 1
    with ThreadPoolExecutor(2) as pool, hub_a.kb.engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM devices WHERE id = :id FOR NO KEY UPDATE"), {"id": A})
        holder.execute(text("SELECT 1 FROM batches WHERE id = :id FOR NO KEY UPDATE"), {"id": batch})
        futures: list[Future[SubmitResult]] = [pool.submit(submit, hub, clock, A, batch) for hub in (hub_a, hub_b)]
        assert wait_until(lambda: waiting_on_locks(hub_a) >= 2 or any(f.done() for f in futures))
        holder.commit()
        results = [f.result() for f in futures]
    assert sorted(len(r.accepted) for r in results) == [0, 1], [reasons(r) for r in results]
    assert sorted(reasons(r) for r in results) == [[], [reason]]
    assert hub_a.kb.count(Sample) == 2


def test_hand_out_turns_alternate_across_hubs(hubs: MakeHub, clock: Clock) -> None:
    """A's samples are older than B's. Tasks taken from hub A and hub B in turn go round the devices; each hub
    kept its own turn before, so hub B handed out A's second sample right after hub A handed out A's first."""
    hub_a, hub_b = hubs(), hubs()
    for device in (A, B):
        for _ in range(3):
            assert len(submit(hub_a, clock, device).accepted) == 1
        clock.now += 1
    hub_a.annotators.register("p")
    order = [answer_next(hub, "p") for hub in (hub_a, hub_b, hub_a, hub_b, hub_b, hub_a)]
    assert order == [A, B, A, B, A, B]
    restarted = hubs()  # the turn outlives a process
    assert len(submit(restarted, clock, A).accepted) == 1 and len(submit(restarted, clock, B).accepted) == 1
    assert answer_next(restarted, "p") == A  # B was served last


def test_counting_a_sample_reads_an_hour_of_minutes_by_key_and_drops_older_ones(tmp_path: Path,
                                                                                clock: Clock) -> None:
    """What the limits add to storing a sample: a few statements on device_intake_minutes by primary key (SQLite's
    planner, no ANALYZE: what a hub runs with), never a scan; rows older than the hour go when a minute begins."""
    hub = open_hub(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, clock, max_samples_per_device_per_hour=10)
    try:
        assert len(submit(hub, clock).accepted) == 1
        clock.now += 2 * HOUR_S
        seen: list[tuple[str, object]] = []
        event.listen(hub.kb.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, parameters, context, many: seen.append((statement, parameters)))
        assert len(submit(hub, clock).accepted) == 1
        counting = [(sql, params) for sql, params in seen if "device_intake_minutes" in sql]
        assert len(counting) == 4, counting  # the request's read, the sample's read, its upsert, the old rows
        with hub.kb.engine.connect() as connection:
            for sql, params in counting:
                plan = " | ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
                assert "SCAN device_intake_minutes" not in plan, plan
        with hub.kb.session() as s:
            assert s.query(DeviceIntakeMinute).count() == 1  # the first hour's row is gone
    finally:
        hub.close()
