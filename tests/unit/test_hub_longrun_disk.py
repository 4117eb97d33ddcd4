"""The hub's disk fills while devices send samples (review of a hub left running for months). Before: an image file
that could not be written left its half-written `.tmp` behind, and a sample whose image file was written but whose
row the full database refused left that file, named by no row, for good. Now neither stays; the sample is not
stored (the device, answered nothing, sends it again) and once there is room again the same sample is stored and
handed out. SQLite's page limit (`max_page_count`, SQLITE_FULL: what a full disk returns) stands for a full
database's disk, /dev/full for a full image folder."""

from __future__ import annotations

import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from hgen.hub.config import parse_hub_config
from hgen.hub.errors import KnowledgeBaseError
from hgen.hub.kb.images import MAX_SET_ASIDE, UnreadableSamples
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.protos import hub_pb2

CAM = "cam-a"
INLINE_MAX = 100  # every test image (about 800 bytes) is a file under image_dir


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[HubService, Path, list[int]]]:
    """A hub on SQLite whose connections hold the database to `limit[0]` pages (0: no limit); its image folder."""
    db, images, limit = tmp_path / "hub.db", tmp_path / "img", [0]
    url = f"sqlite:///{db}"
    config = parse_hub_config({"devices": [CAM], "knowledge_base": {
        "url": url, "inline_image_max_bytes": INLINE_MAX, "image_dir": str(images)}})
    clock = Clock()
    kb = KnowledgeBase.open(url, image_dir=images, inline_max_bytes=INLINE_MAX, clock=clock)

    def hold_pages(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        pages = limit[0] or 1 << 30
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    event.listen(kb.engine, "checkout", hold_pages)
    hub = HubService(config, kb, clock=clock)
    try:
        yield hub, images, limit
    finally:
        hub.close()


def submit(hub: HubService, sample: hub_pb2.Sample, batch_id: str) -> list[str]:
    result = hub.submit(make_request(CAM, [sample], m=1, batch_id=batch_id, now=hub.clock()), "grpc")
    return list(result.accepted)


def files(images: Path) -> set[str]:
    return {p.name for p in images.rglob("*") if p.is_file() or p.is_symlink()}


def test_full_database_leaves_no_image_file_and_recovers(setup: tuple[HubService, Path, list[int]],
                                                        tmp_path: Path) -> None:
    hub, images, limit = setup
    batch = str(uuid.uuid4())
    assert submit(hub, make_sample(CAM), batch)  # the batch is stored while there is room
    with sqlite3.connect(tmp_path / "hub.db") as raw:
        limit[0] = raw.execute("PRAGMA page_count").fetchone()[0]
    refused = None
    for seed in range(2000):  # the disk fills as samples arrive
        sample = make_sample(CAM, image=png_image(seed=seed + 1))
        try:
            submit(hub, sample, batch)
        except OperationalError as exc:
            assert "full" in str(exc)
            refused = sample
            break
    assert refused is not None, "the database never filled"
    stored = {name.split(".")[0] for name in files(images)}
    assert refused.sample_id not in stored, "the image of a sample the full database refused stayed on disk"
    limit[0] = 0  # room again
    assert submit(hub, refused, batch) == [refused.sample_id]  # the device sends it again: stored
    hub.kb.register_annotator("alice")
    task = hub.kb.assign_next("alice")
    assert task is not None and task.image.data  # and the hub serves on


def test_full_image_folder_leaves_no_partial_file_and_recovers(setup: tuple[HubService, Path, list[int]]) -> None:
    hub, images, _limit = setup
    batch = str(uuid.uuid4())
    sample = make_sample(CAM)
    tmp = images / sample.sample_id[:2] / f"{sample.sample_id}.png.tmp"
    tmp.parent.mkdir(parents=True)
    os.symlink("/dev/full", tmp)  # every write there fails: No space left on device
    with pytest.raises(KnowledgeBaseError, match="No space left on device"):
        submit(hub, sample, batch)
    assert not hub.kb.sample_exists(sample.sample_id)
    assert not os.path.lexists(tmp), "the half-written image file stayed after the failed write"
    assert submit(hub, sample, batch) == [sample.sample_id]  # room again: the re-sent sample is stored
    hub.kb.register_annotator("alice")
    task = hub.kb.assign_next("alice")
    assert task is not None and task.image.data == sample.image.data


def test_unreadable_images_are_still_logged_after_months(caplog: pytest.LogCaptureFixture) -> None:
    """Each sample whose image cannot be read is logged once; the set of those logged only filled, so after a hub's
    first 1,024 (a few bad disk days over months) no unreadable image was ever logged again."""
    aside = UnreadableSamples(Clock())
    for i in range(MAX_SET_ASIDE + 1):
        aside.set_aside(f"old-{i}", "gone")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hgen.hub.kb.images"):
        aside.set_aside("new", "Input/output error")
    assert any("sample new" in r.getMessage() for r in caplog.records), "a new unreadable image went unlogged"


def test_over_mqtt_a_sample_the_full_image_folder_refused_is_retried_not_dropped(
        setup: tuple[HubService, Path, list[int]]) -> None:
    """The MQTT ingest acknowledged and dropped a message whose image could not be written (`mqtt_ingest_dropped`:
    only the device's re-ask, later, recovered it); it is retried as a database outage is, until there is room."""
    import queue
    from collections import Counter

    from hgen.hub.transports.mqtt import TRANSIENT
    from hgen.hub.transports.mqtt_ingest import IngestWorker, Received

    hub, images, _limit = setup
    sample = make_sample(CAM)
    tmp = images / sample.sample_id[:2] / f"{sample.sample_id}.png.tmp"
    tmp.parent.mkdir(parents=True)
    os.symlink("/dev/full", tmp)  # the folder is full for the first try (the failed write removes the link)
    acked: queue.SimpleQueue[int] = queue.SimpleQueue()
    counts: Counter[str] = Counter()
    worker = IngestWorker(lambda _m: submit(hub, sample, str(uuid.uuid4())), lambda m: acked.put(m.mid),
                          lambda: 1, lambda name: counts.update([name]), transient=TRANSIENT, retry_s=(0.0,))
    worker.start()
    try:
        worker.put(Received(1, 7, 1, f"hgen/v1/{CAM}/samples", b""))
        assert acked.get(timeout=30) == 7
    finally:
        worker.stop()
    assert (counts["mqtt_ingest_retried"], counts["mqtt_ingest_dropped"]) == (1, 0)
    assert hub.kb.sample_exists(sample.sample_id)
