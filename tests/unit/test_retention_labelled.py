"""Retention of answered images (knowledge_base.keep_labelled_images): a retrain reads at most the newest
retrain.max_labels labels of its model, yet every answered sample's image was kept for good and filled the disk of a
hub running for months. With N set, the images of the newest N labels of each model that retraining reads stay,
older answered ones are emptied (rows and replies kept); gold, open and expired samples are not its business, and
every reader of an emptied answered image copes. SQLite and PostgreSQL; time passes on the injected clock."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Reply, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain.data import human_set
from hgen.hub.retrain.records import RetrainStore
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.services import closing_maker
from hgen.protos import hub_pb2

CAM = "cam-a"
MODEL, OTHER = "lenet5", "other"
MakeHub = Callable[..., HubService]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_hub(url: str, tmp_path: Path, clock: Clock, keep: int | None = 3) -> HubService:
    """A hub without transports; images over 2,000 bytes are files under tmp_path/img. Expired samples keep their
    images (that is the other retention's business)."""
    kbc: dict[str, object] = {"url": url, "inline_image_max_bytes": 2000, "image_dir": str(tmp_path / "img"),
                              "keep_unlabelled_images_days": 0}
    if keep is not None:
        kbc["keep_labelled_images"] = keep
    config = parse_hub_config({"devices": [CAM], "knowledge_base": kbc})
    kb = KnowledgeBase.open(url, image_dir=tmp_path / "img", inline_max_bytes=2000, clock=clock)
    return HubService(config, kb, clock=clock)


@pytest.fixture
def hubs(kb_url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    yield from closing_maker(functools.partial(open_hub, kb_url, tmp_path, clock))


@pytest.fixture
def sqlite_hubs(tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:
    yield from closing_maker(functools.partial(open_hub, f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, clock))


def sample(seed: int, model: str = MODEL) -> hub_pb2.Sample:
    """Even seeds inline (16 px), odd ones a file (64 px)."""
    made = make_sample(CAM, image=png_image(size=16 if seed % 2 == 0 else 64, seed=seed))
    made.bundle_name = model
    return made


def labelled(hub: HubService, clock: Clock, seed: int, model: str = MODEL, person: str = "p") -> hub_pb2.Sample:
    """A sample answered by one person (m=1): a label, closed now; the clock then moves on 10 s."""
    made = sample(seed, model)
    assert len(hub.submit(make_request(CAM, [made], m=1, now=clock.now), "grpc").accepted) == 1
    hub.annotators.register(person)
    task = hub.annotators.next_task(person)
    assert task is not None and task.sample_id == made.sample_id
    hub.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=person, class_id=seed % 10,
                                                operations=1))
    clock.now += 10.0
    return made


def image_of(hub: HubService, sample_id: str) -> tuple[bytes | None, str | None]:
    with hub.kb.session() as s:
        row = s.get(Sample, sample_id)
        return row.image_bytes, row.image_path


def files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "img").rglob("*") if p.is_file()}


def kept(hub: HubService, samples: list[hub_pb2.Sample]) -> list[bool]:
    return [image_of(hub, s.sample_id) != (b"", None) for s in samples]


def test_the_newest_n_labels_of_each_model_keep_their_images_and_older_answered_ones_go(
        hubs: MakeHub, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hub = hubs()
    old = [labelled(hub, clock, seed) for seed in (0, 1)]
    partial = sample(3)  # one answer of the two asked at its deadline: answered by people, yet no label
    hub.submit(make_request(CAM, [partial], m=2, deadline_s=5.0, now=clock.now), "grpc")
    hub.annotators.register("r")
    task = hub.annotators.next_task("r")
    assert task is not None and task.sample_id == partial.sample_id
    hub.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="r", class_id=1, operations=1))
    clock.now += 10.0
    assert hub.sweep_once()
    expired = sample(5)  # nobody answered it
    hub.submit(make_request(CAM, [expired], m=1, deadline_s=5.0, now=clock.now), "grpc")
    clock.now += 10.0
    assert hub.sweep_once()
    newest = [labelled(hub, clock, seed) for seed in (6, 7, 8)]
    other = [labelled(hub, clock, seed, OTHER) for seed in (10, 11, 12)]  # newer, but another model's
    still_open = sample(13)
    hub.submit(make_request(CAM, [still_open], m=1, now=clock.now), "grpc")
    gold_id = hub.gold.add(png_image(size=16, seed=90), 2, 10, hub.config.limits)
    before = {s.sample_id: image_of(hub, s.sample_id) for s in [*old, partial, expired, *newest, *other, still_open]}
    stored_files = files(tmp_path)

    with caplog.at_level(logging.INFO, logger="hgen.hub.kb.retention_labelled"):
        assert not hub.retain_images()  # one batch of 3: done
    assert kept(hub, [*old, partial]) == [False, False, False]
    assert kept(hub, [expired, *newest, *other, still_open]) == [True] * 8
    assert image_of(hub, gold_id)[0]
    gone = {Path(before[s.sample_id][1] or "").name for s in (old[1], partial)}
    assert files(tmp_path) == stored_files - gone
    freed = sum(len(s.image.data) for s in (*old, partial))
    assert (hub.metrics.get("images_removed"), hub.metrics.get("image_bytes_freed")) == (3, freed)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "removed the images of 3 answered sample(s)" in said[0], said

    # rows and replies stay; a re-sent answered sample is still answered from its reply
    with hub.kb.session() as s:
        assert s.query(Sample).count() == 12 and s.query(Reply).count() == 10
    resent = hub.submit(make_request(CAM, [old[0]], m=1, now=clock.now), "grpc")
    assert resent.duplicates == [old[0].sample_id]
    assert [r.status for r in resent.immediate] == [hub_pb2.REPLY_STATUS_ANSWERED]

    # retraining: the newest three it reads all hold their images; reading every label leaves the emptied out
    store = RetrainStore(hub.kb, clock)
    read = store.labelled_samples(MODEL, up_to=clock.now, newest=3)
    assert sorted(s.sample_id for s in read) == sorted(s.sample_id for s in newest) and all(s.image for s in read)
    every = store.labelled_samples(MODEL, up_to=clock.now)
    assert len(every) == 5 and len(human_set(every, (28, 28, 1), 10)) == 3

    clock.now += 3600.0  # a later round finds nothing more
    assert not hub.retain_images() and hub.metrics.get("images_removed") == 3


def test_a_retrain_under_way_keeps_every_image_it_may_read(sqlite_hubs: MakeHub, clock: Clock) -> None:
    """Labels made while a retrain is queued or running do not push the labels it reads (up to its cutoff) out."""
    hub = sqlite_hubs(keep=2)
    store = RetrainStore(hub.kb, clock)
    first = [labelled(hub, clock, seed) for seed in range(3)]
    run = store.create_run(MODEL, "threshold", "1")
    later = [labelled(hub, clock, seed) for seed in range(3, 6)]
    assert not hub.retain_images()
    assert kept(hub, first + later) == [False, True, True, True, True, True]
    read = store.labelled_samples(MODEL, up_to=run.cutoff, newest=2)
    assert sorted(s.sample_id for s in read) == sorted(s.sample_id for s in first[1:]) and all(s.image for s in read)

    store.finish_run(run.id, "published", to_version="2")
    clock.now += 3600.0
    assert not hub.retain_images()
    assert kept(hub, first + later) == [False, False, False, False, True, True]


def test_a_paused_annotators_labels_and_their_return(sqlite_hubs: MakeHub, clock: Clock) -> None:
    """A paused annotator's labels are left out of retraining, so not counted; once resumed they are read again,
    and the newest N a retrain then reads still hold their images."""
    hub = sqlite_hubs(keep=2)
    store = RetrainStore(hub.kb, clock)
    samples = [labelled(hub, clock, seed) for seed in range(3)]
    samples.append(labelled(hub, clock, 3, person="x"))
    samples.append(labelled(hub, clock, 4))
    hub.gold.pause("x", "failed gold")
    assert not hub.retain_images()
    assert kept(hub, samples) == [False, False, True, True, True]
    assert all(s.image for s in store.labelled_samples(MODEL, up_to=clock.now, newest=2))
    hub.gold.resume("x")
    read = store.labelled_samples(MODEL, up_to=clock.now, newest=2)
    assert sorted(s.sample_id for s in read) == sorted(s.sample_id for s in samples[3:]) and all(s.image for s in read)


def test_a_backlog_goes_one_batch_per_turn_model_after_model(sqlite_hubs: MakeHub, clock: Clock, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """After enabling it on a hub that ran for months, the backlog goes a batch per turn of the deadline loop, said
    before the first batch and when done; the next round comes a minute later."""
    from hgen.hub.kb.retention_labelled import LabelledImageRetention

    hub = sqlite_hubs(keep=None)
    samples = [labelled(hub, clock, seed) for seed in range(4)] + [labelled(hub, clock, s, OTHER) for s in (4, 5, 6)]
    assert not hub.retain_images() and hub.metrics.get("images_removed") == 0  # 0 (the default): every image kept
    retention = LabelledImageRetention(hub.kb, 1, hub.metrics.inc, clock, batch=2)
    with caplog.at_level(logging.INFO, logger="hgen.hub.kb.retention_labelled"):
        assert retention.run_if_due()
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "removing the images of 5 answered sample(s) of 2 model(s)" in said[0], said
        assert hub.metrics.get("images_removed") == 2
        assert retention.run_if_due() and retention.run_if_due()  # the first model's last one, then the other's
        assert not retention.run_if_due() and hub.metrics.get("images_removed") == 5
        assert not retention.run_if_due()  # the next round a minute later
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "removed the images of 5 answered sample(s)" in said[1], said
    assert kept(hub, samples) == [False, False, False, True, False, False, True]
    assert len(files(tmp_path)) == 1


def test_without_image_dir_a_hub_empties_inline_images_only(sqlite_hubs: MakeHub, clock: Clock,
                                                            tmp_path: Path) -> None:
    from hgen.hub.kb.images import ImageStore
    from hgen.hub.kb.retention_labelled import LabelledImageRetention
    from hgen.hub.kb.store import KnowledgeBase

    hub = sqlite_hubs(keep=None)
    samples = [labelled(hub, clock, seed) for seed in range(3)]
    diskless = KnowledgeBase(hub.kb.engine, ImageStore(None, 2000), clock=clock)
    assert not LabelledImageRetention(diskless, 1, hub.metrics.inc, clock).run_if_due()
    assert kept(hub, samples) == [False, True, True] and len(files(tmp_path)) == 1
    assert not LabelledImageRetention(hub.kb, 1, hub.metrics.inc, clock).run_if_due()
    assert kept(hub, samples) == [False, False, True] and files(tmp_path) == set()


def test_two_sweeps_at_once_on_postgresql_take_disjoint_rows(pg_url: str, tmp_path: Path,  # noqa: F811
                                                             clock: Clock) -> None:
    """While one hub's batch holds its rows (locked, not yet emptied), another hub's sweep skips them instead of
    waiting on them or failing; the first then empties them all."""
    first, second = open_hub(pg_url, tmp_path, clock, keep=1), open_hub(pg_url, tmp_path, clock, keep=1)
    try:
        samples = [labelled(first, clock, seed) for seed in range(3)]
        locked, go_on = threading.Event(), threading.Event()

        def hold(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
            if "FOR UPDATE" in statement and threading.current_thread().name == "first-sweep":
                locked.set()
                go_on.wait(30)

        event.listen(first.kb.engine, "after_cursor_execute", hold)
        outcome: list[object] = []
        sweeper = threading.Thread(target=lambda: outcome.append(first.retain_images()), name="first-sweep")
        sweeper.start()
        try:
            assert locked.wait(30)
            done = threading.Event()
            other = threading.Thread(target=lambda: (second.retain_images(), done.set()))
            other.start()
            assert done.wait(30), "the second sweep waited on the first one's rows"
        finally:
            go_on.set()
            sweeper.join(30)
        assert outcome == [False]
        assert (first.metrics.get("images_removed"), second.metrics.get("images_removed")) == (2, 0)
        assert kept(first, samples) == [False, False, True] and len(files(tmp_path)) == 0
    finally:
        first.close()
        second.close()
