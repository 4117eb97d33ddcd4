"""Retention of unlabelled images (review: nothing ever deleted them). A sample that expired with no answer keeps
its image for no use, inline or as a file under image_dir, and a fleet at its image budget filled a disk in days.
After knowledge_base.keep_unlabelled_images_days the sweep empties such an image (the file deleted), keeping the
row; labelled, partial, open and gold samples keep theirs, and every reader copes. SQLite and PostgreSQL; time
passes on the injected clock."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import OperationalError

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import HubConfigError
from hgen.hub.kb.images import ImageStore
from hgen.hub.kb.migrate import downgrade, upgrade
from hgen.hub.kb.models import Reply, Sample
from hgen.hub.kb.retention import DAY_S, ROUND_EVERY_S, ImageRetention
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain.data import human_set
from hgen.hub.retrain.records import RetrainStore
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.web.stats import overview
from hgen.hub.testing.services import closing_maker
from hgen.protos import hub_pb2

CAM = "cam-a"
KEEP_DAYS = 7.0
DEADLINE_S = 600.0
MakeHub = Callable[..., HubService]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_hub(url: str, tmp_path: Path, clock: Clock, keep_days: float | None = KEEP_DAYS) -> HubService:
    """A hub without transports; images over 2,000 bytes are files under tmp_path/img (shared by every hub made)."""
    kbc: dict[str, object] = {"url": url, "inline_image_max_bytes": 2000, "image_dir": str(tmp_path / "img")}
    if keep_days is not None:
        kbc["keep_unlabelled_images_days"] = keep_days
    config = parse_hub_config({"devices": [CAM], "knowledge_base": kbc,
                               "limits": {"max_deadline_s": 30 * DAY_S}})
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", inline_max_bytes=2000, clock=clock)
    return HubService(config, kb, clock=clock)


def hub_maker(url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:
    yield from closing_maker(functools.partial(open_hub, url, tmp_path, clock))


@pytest.fixture
def hubs(kb_url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    yield from hub_maker(kb_url, tmp_path, clock)


@pytest.fixture
def sqlite_hubs(tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:
    yield from hub_maker(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, clock)


def small(seed: int) -> hub_pb2.Sample:
    """Its image is kept inline (under 2,000 bytes)."""
    return make_sample(CAM, image=png_image(size=16, seed=seed))


def big(seed: int) -> hub_pb2.Sample:
    """Its image is kept as a file."""
    return make_sample(CAM, image=png_image(size=64, seed=seed))


def submit(hub: HubService, clock: Clock, samples: list[hub_pb2.Sample], *, m: int = 1,
           deadline_s: float = DEADLINE_S) -> list[hub_pb2.SampleReply]:
    result = hub.submit(make_request(CAM, samples, m=m, deadline_s=deadline_s, now=clock.now), "grpc")
    assert len(result.accepted) == len(samples), result.immediate
    return result.immediate


def answer(hub: HubService, person: str, class_id: int = 1) -> str:
    hub.annotators.register(person)
    task = hub.annotators.next_task(person)
    assert task is not None
    hub.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=person, class_id=class_id,
                                                operations=1))
    return task.sample_id


def image_of(hub: HubService, sample_id: str) -> tuple[bytes | None, str | None]:
    with hub.kb.session() as s:
        row = s.get(Sample, sample_id)
        return row.image_bytes, row.image_path


def files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "img").rglob("*") if p.is_file()}


class Scene:
    """Closed at `closed` (600 s after they came): two samples that expired unanswered (one inline, one a file; one of
    them was skipped by a person first), two answered (inline, file), one partial (file, 1 of 2 answers, the other
    task still held at the deadline); and one still open, received as long ago, with a 30-day deadline."""

    def __init__(self, hub: HubService, clock: Clock) -> None:
        self.expired_inline, self.expired_file = small(1), big(2)
        self.labelled_inline, self.labelled_file, self.partial = small(3), big(4), big(5)
        self.still_open = big(6)
        submit(hub, clock, [self.labelled_inline, self.labelled_file])
        assert {answer(hub, "p"), answer(hub, "q")} == {self.labelled_inline.sample_id, self.labelled_file.sample_id}
        submit(hub, clock, [self.partial], m=2)
        assert answer(hub, "r") == self.partial.sample_id
        hub.annotators.register("r2")
        held = hub.annotators.next_task("r2")  # held, never answered
        assert held is not None and held.sample_id == self.partial.sample_id
        submit(hub, clock, [self.expired_inline, self.expired_file])
        hub.annotators.register("s")
        self.skipped = hub.annotators.next_task("s")
        assert self.skipped is not None and self.skipped.sample_id in (self.expired_inline.sample_id,
                                                                        self.expired_file.sample_id)
        hub.annotators.release(self.skipped.task_id, "s", "skip")
        submit(hub, clock, [self.still_open], deadline_s=30 * DAY_S)
        clock.now += DEADLINE_S + 1
        assert hub.sweep_once()
        self.closed = clock.now
        self.kept = [self.labelled_inline, self.labelled_file, self.partial, self.still_open]
        self.removed = [self.expired_inline, self.expired_file]
        self.statuses = {s.sample_id: st for s, st in [(self.expired_inline, "expired"), (self.expired_file, "expired"),
                                                       (self.labelled_inline, "answered"),
                                                       (self.labelled_file, "answered"), (self.partial, "partial"),
                                                       (self.still_open, "received")]}

    def all(self) -> list[hub_pb2.Sample]:
        return self.kept + self.removed


def test_an_expired_unanswered_samples_image_is_removed_after_the_retention_time(
        hubs: MakeHub, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hub = hubs()
    scene = Scene(hub, clock)
    with hub.kb.session() as s:
        assert {row.id: row.status for row in s.query(Sample)} == scene.statuses
    before = {s.sample_id: image_of(hub, s.sample_id) for s in scene.all()}
    stored_files = files(tmp_path)
    assert before[scene.expired_inline.sample_id] == (scene.expired_inline.image.data, None)
    assert before[scene.expired_file.sample_id][1] is not None and len(stored_files) == 4

    clock.now = scene.closed + KEEP_DAYS * DAY_S - ROUND_EVERY_S  # not yet (the next round is a minute later)
    assert not hub.retain_images()
    assert {s.sample_id: image_of(hub, s.sample_id) for s in scene.all()} == before and files(tmp_path) == stored_files

    clock.now = scene.closed + KEEP_DAYS * DAY_S + 1
    with caplog.at_level(logging.INFO, logger="hgen.hub.kb.retention"):
        assert not hub.retain_images()
    for sample in scene.removed:
        assert image_of(hub, sample.sample_id) == (b"", None)
    for sample in scene.kept:
        assert image_of(hub, sample.sample_id) == before[sample.sample_id]
    file_of_expired = Path(before[scene.expired_file.sample_id][1] or "").name
    assert files(tmp_path) == stored_files - {file_of_expired}
    freed = len(scene.expired_inline.image.data) + len(scene.expired_file.image.data)
    assert (hub.metrics.get("images_removed"), hub.metrics.get("image_bytes_freed")) == (2, freed)
    said = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
    assert len(said) == 1 and "removed the images of 2 sample(s)" in said[0], said  # one batch: said once, done

    # the rows stay: statuses, replies, and a re-sent expired sample is still a duplicate answered EXPIRED
    with hub.kb.session() as s:
        assert {row.id: row.status for row in s.query(Sample)} == scene.statuses
        assert s.query(Reply).count() == 5
    resent = hub.submit(make_request(CAM, [scene.expired_inline], m=1, now=clock.now), "grpc")
    assert resent.duplicates == [scene.expired_inline.sample_id]
    assert [r.status for r in resent.immediate] == [hub_pb2.REPLY_STATUS_EXPIRED]

    clock.now += ROUND_EVERY_S  # the next round finds nothing: counted and said once only
    with caplog.at_level(logging.INFO, logger="hgen.hub.kb.retention"):
        assert not hub.retain_images()
    assert hub.metrics.get("images_removed") == 2
    assert len([r for r in caplog.records if "retention" in r.getMessage()]) == 1


def test_readers_cope_with_a_removed_image(hubs: MakeHub, clock: Clock) -> None:
    """Annotators are never handed (nor shown) an expired sample, its removed image is not taken for an
    unreadable one, retraining's data loading reads the labelled samples as before, gold goes on, and the operator
    page's figures do not change."""
    hub = hubs()
    scene = Scene(hub, clock)
    gold_id = hub.gold.add(png_image(size=16, seed=9), 2, 10, hub.config.limits)
    store = RetrainStore(hub.kb, clock)
    labels_before = store.new_label_count("lenet5")
    clock.now = scene.closed + KEEP_DAYS * DAY_S + 1
    page_before = overview(hub.kb, clock.now, ())
    hub.retain_images()
    assert image_of(hub, scene.expired_file.sample_id) == (b"", None)
    assert overview(hub.kb, clock.now, ()) == page_before  # the operator page: the same figures

    # annotators: the one who skipped has no open task on it (the image route reads only open tasks, and held
    # ones), and the next people are handed the open sample, never an expired one; nothing is set aside as
    # unreadable
    assert hub.kb.open_task(scene.skipped.task_id, "s") is None and hub.kb.held_task("s") is None
    for person in ("t", "t2"):
        hub.kb.register_annotator(person)
    task = hub.kb.assign_next("t")
    assert task is not None and task.sample_id == scene.still_open.sample_id
    assert task.image.data == scene.still_open.image.data
    assert hub.kb.assign_next("t2") is None  # the open sample's one slot is taken; nothing expired is offered
    assert hub.kb.unreadable.current() == [] and hub.metrics.get("sample_image_unreadable") == 0

    # retraining: the same labelled samples with their images, which decode
    # (the partial one, one answer of the two asked, is no label: hgen.hub.kb.closing keeps a majority's only)
    assert store.new_label_count("lenet5") == labels_before == 2
    samples = store.labelled_samples("lenet5", up_to=clock.now)
    assert sorted(s.sample_id for s in samples) == sorted(
        [scene.labelled_inline.sample_id, scene.labelled_file.sample_id])
    assert all(s.image for s in samples)
    assert len(human_set(samples, (28, 28, 1), 10)) == 2

    # gold: kept and handed out with its image
    assert image_of(hub, gold_id)[0]
    hub.kb.register_annotator("g")
    gold_task = hub.gold.assign("g")
    assert gold_task is not None and gold_task.sample_id == gold_id and gold_task.image.data


def test_retention_zero_keeps_every_image_and_the_default_is_seven_days(sqlite_hubs: MakeHub, clock: Clock,
                                                                        tmp_path: Path) -> None:
    assert parse_hub_config({}).knowledge_base.keep_unlabelled_images_days == 7.0
    with pytest.raises(HubConfigError, match="keep_unlabelled_images_days"):
        parse_hub_config({"knowledge_base": {"keep_unlabelled_images_days": -1}})
    hub = sqlite_hubs(keep_days=0)
    scene = Scene(hub, clock)
    clock.now = scene.closed + 365 * DAY_S
    assert not hub.retain_images()
    assert image_of(hub, scene.expired_inline.sample_id)[0] == scene.expired_inline.image.data
    assert len(files(tmp_path)) == 4 and hub.metrics.get("images_removed") == 0


def test_a_backlog_is_removed_one_batch_per_turn_said_before_the_first(sqlite_hubs: MakeHub, clock: Clock,
                                                                      tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """One transaction per batch, and one batch per call (a turn of the deadline loop: 20 batches and their file
    deletions at once kept the deadline sweep beside them waiting); a backlog is due again at once, a finished
    round only ROUND_EVERY_S later. A round of more than one batch first says how many images it will remove
    (after an upgrade, the whole backlog goes), and once more when done."""
    hub = sqlite_hubs()
    samples = [small(seed) for seed in range(4)] + [big(seed) for seed in range(4, 7)]
    submit(hub, clock, samples)
    clock.now += DEADLINE_S + 1
    hub.sweep_once()
    clock.now += KEEP_DAYS * DAY_S + 1
    retention = ImageRetention(hub.kb, KEEP_DAYS, hub.metrics.inc, clock, batch=2)
    removals: list[int] = []
    event.listen(hub.kb.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, context, many:
                     removals.append(1) if statement.lstrip().upper().startswith("UPDATE SAMPLES") else None)
    with caplog.at_level(logging.INFO, logger="hgen.hub.kb.retention"):
        assert retention.run_if_due()  # one batch of 2: a backlog is left
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "removing the images of 7 sample(s)" in said[0], said  # before any went
        assert (hub.metrics.get("images_removed"), len(removals)) == (2, 1)
        assert retention.run_if_due() and retention.run_if_due()  # due at once, one batch each
        assert (hub.metrics.get("images_removed"), len(removals)) == (6, 3)
        assert not retention.run_if_due()  # the last one
        assert (hub.metrics.get("images_removed"), len(removals)) == (7, 4)
        assert not retention.run_if_due() and len(removals) == 4  # the next round only ROUND_EVERY_S later
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "removed the images of 7 sample(s)" in said[1], said
    assert files(tmp_path) == set()
    assert hub.metrics.get("image_bytes_freed") == sum(len(s.image.data) for s in samples)


def test_the_service_loop_closes_due_deadlines_between_retention_batches(sqlite_hubs: MakeHub,
                                                                        clock: Clock) -> None:
    """A deadline that comes due while retention has a backlog is closed after one more batch at most, not after
    the whole round."""
    hub = sqlite_hubs()
    submit(hub, clock, [small(seed) for seed in range(3)])
    clock.now += DEADLINE_S + 1
    hub.sweep_once()
    clock.now += KEEP_DAYS * DAY_S + 1
    hub.retention = ImageRetention(hub.kb, KEEP_DAYS, hub.metrics.inc, clock, batch=1)
    due = small(9)
    submit(hub, clock, [due], deadline_s=-1.0)  # due at once
    order: list[str] = []
    closed = threading.Event()
    remove, expire = hub.kb.remove_unlabelled_images, hub.kb.expire_due

    def removing(*args: object, **kwargs: object) -> object:
        order.append("batch")
        return remove(*args, **kwargs)  # type: ignore[arg-type]

    def expiring(*args: object, **kwargs: object) -> object:
        replies = expire(*args, **kwargs)  # type: ignore[arg-type]
        if replies:
            order.append("deadline")
            closed.set()
        return replies

    hub.kb.remove_unlabelled_images = removing  # type: ignore[method-assign]
    hub.kb.expire_due = expiring  # type: ignore[method-assign]
    hub.start()
    try:
        assert closed.wait(30)
    finally:
        hub.stop()
    assert order[:2] == ["batch", "deadline"], order


def test_two_hubs_on_one_database_and_a_file_already_gone(hubs: MakeHub, clock: Clock, tmp_path: Path) -> None:
    """The second sweep finds nothing left and does not fail; a file another hub (or a person) deleted already is no
    error and frees nothing."""
    first, second = hubs(), hubs()
    scene = Scene(first, clock)
    gone = tmp_path / "img" / (image_of(first, scene.expired_file.sample_id)[1] or "")
    gone.unlink()
    clock.now = scene.closed + KEEP_DAYS * DAY_S + 1
    assert not first.retain_images() and not second.retain_images()
    assert (first.metrics.get("images_removed"), second.metrics.get("images_removed")) == (2, 0)
    assert first.metrics.get("image_bytes_freed") == len(scene.expired_inline.image.data)
    assert image_of(second, scene.expired_file.sample_id) == (b"", None)


def test_a_file_that_cannot_be_deleted_is_counted_and_said_once(sqlite_hubs: MakeHub, clock: Clock,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    hub = sqlite_hubs()
    scene = Scene(hub, clock)

    def refuse(relative: str) -> int:
        raise PermissionError(13, "Permission denied")

    hub.kb.images.remove = refuse  # type: ignore[method-assign]
    clock.now = scene.closed + KEEP_DAYS * DAY_S + 1
    with caplog.at_level(logging.WARNING, logger="hgen.hub.kb.retention"):
        hub.retain_images()
    assert image_of(hub, scene.expired_file.sample_id) == (b"", None)  # the row no longer names it
    assert (hub.metrics.get("images_removed"), hub.metrics.get("image_remove_failed")) == (2, 1)
    assert hub.metrics.get("image_bytes_freed") == len(scene.expired_inline.image.data)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "Permission denied" in warned[0], warned


def test_a_hub_without_image_dir_leaves_files_to_a_hub_that_has_it(sqlite_hubs: MakeHub, clock: Clock,
                                                                     tmp_path: Path) -> None:
    hub = sqlite_hubs()
    scene = Scene(hub, clock)
    file_row = image_of(hub, scene.expired_file.sample_id)
    diskless = KnowledgeBase(hub.kb.engine, ImageStore(None, 2000), clock=clock)
    removed = diskless.remove_unlabelled_images(scene.closed)
    assert (removed.images, removed.bytes_freed) == (1, len(scene.expired_inline.image.data))
    assert image_of(hub, scene.expired_file.sample_id) == file_row and len(files(tmp_path)) == 4
    assert hub.kb.remove_unlabelled_images(scene.closed).images == 1 and len(files(tmp_path)) == 3


def test_two_sweeps_at_once_on_postgresql_take_disjoint_rows(pg_url: str, tmp_path: Path,  # noqa: F811
                                                             clock: Clock) -> None:
    """While one hub's batch holds its rows (locked, not yet emptied), another hub's sweep skips them instead of
    waiting on them or failing; the first then empties them all."""
    first, second = open_hub(pg_url, tmp_path, clock), open_hub(pg_url, tmp_path, clock)
    try:
        scene = Scene(first, clock)
        clock.now = scene.closed + KEEP_DAYS * DAY_S + 1
        locked, go_on = threading.Event(), threading.Event()

        def hold(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            if "FOR UPDATE" in statement and threading.current_thread().name == "first-sweep":
                locked.set()
                go_on.wait(30)

        event.listen(first.kb.engine, "after_cursor_execute", hold)
        outcome: list[object] = []
        sweeper = threading.Thread(target=lambda: outcome.append(first.retention.run_if_due()), name="first-sweep")
        sweeper.start()
        try:
            assert locked.wait(30)
            done = threading.Event()
            other = threading.Thread(target=lambda: (second.retention.run_if_due(), done.set()))
            other.start()
            assert done.wait(30), "the second sweep waited on the first one's rows"
        finally:
            go_on.set()
            sweeper.join(30)
        assert outcome == [False]
        assert (first.metrics.get("images_removed"), second.metrics.get("images_removed")) == (2, 0)
        assert len(files(tmp_path)) == 3  # the expired sample's file went, the others stayed
        assert all(image_of(first, s.sample_id) == (b"", None) for s in scene.removed)
    finally:
        first.close()
        second.close()


def test_the_service_loop_runs_retention_and_survives_its_failure(sqlite_hubs: MakeHub, clock: Clock,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    hub = sqlite_hubs()
    ran = threading.Event()

    def broken() -> bool:
        ran.set()
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    hub.retention.run_if_due = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="hgen.hub.service"):
        assert hub.retain_images() is False
    assert "image retention sweep failed" in caplog.text
    ran.clear()
    hub.start()
    try:
        assert ran.wait(30)  # the deadline loop called it, and goes on after its failure
    finally:
        hub.stop()


def test_the_sweep_reads_the_expired_images_index(kb_url: str, tmp_path: Path, clock: Clock) -> None:  # noqa: F811
    """SQLite's planner (no statistics) takes ix_samples_expired_images, not the status index, which holds every
    expired sample ever kept; PostgreSQL can use it (its planner chooses by statistics). Migration 0014 adds and
    removes it."""
    hub = open_hub(kb_url, tmp_path, clock)
    try:
        statements: list[tuple[str, object]] = []
        event.listen(hub.kb.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, parameters, context, many: statements.append((statement,
                                                                                                   parameters)))
        hub.kb.remove_unlabelled_images(clock.now)
        (sql, params), = [(s, p) for s, p in statements if "FROM samples" in s and "length(image_bytes) > 0" in s]
        sqlite = hub.kb.engine.dialect.name == "sqlite"
        with hub.kb.engine.connect() as connection:
            if sqlite:
                plan = " | ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}",
                                                                                      params))
            else:
                connection.exec_driver_sql("SET enable_seqscan = off")
                plan = " | ".join(str(row[0]) for row in connection.exec_driver_sql(f"EXPLAIN {sql}", params))
        assert "ix_samples_expired_images" in plan and "SCAN samples" not in plan and "Seq Scan" not in plan, plan
        engine = hub.kb.engine
        downgrade(engine, "0013")
        assert "ix_samples_expired_images" not in {i["name"] for i in inspect(engine).get_indexes("samples")}
        upgrade(engine)
        assert "ix_samples_expired_images" in {i["name"] for i in inspect(engine).get_indexes("samples")}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM samples")).scalar() == 0
    finally:
        hub.close()
