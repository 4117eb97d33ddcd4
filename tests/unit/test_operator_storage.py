"""The operator page's "Storage" section: the knowledge base's size, the image folder's and the model store's, so an
operator sees the disk fill before it is full (the page showed no size at all). Real hub and web server, real SQLite
(and PostgreSQL for the database size); folder walks are bounded and measured at most once a minute."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.hub.app import HubApp
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.web import add_people, logged_in, web_hub
from hgen.hub.web.storage import StorageGauge, database_size, folder_size


def fill(folder: Path, files: int, size: int) -> None:
    for i in range(files):
        sub = folder / f"d{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(b"\0" * size)


def cell(page: str, row: str, css: str) -> str:
    found = re.search(rf'<tr id="{row}">.*?<td class="{css}">([^<]*)</td>', page, re.S)
    assert found is not None, f"no {css} in row {row}"
    return found.group(1)


def sqlite_bytes(path: Path) -> int:
    return sum(os.stat(p).st_size for p in (path, Path(f"{path}-wal")) if p.exists())


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, retrain={"store_dir": str(tmp_path / "store")}) as app:
        add_people(app, annotators=(), operators=("op",))
        yield app


def test_the_operator_page_shows_the_database_images_and_store_sizes(hub: HubApp, tmp_path: Path) -> None:
    image_dir = hub.service.kb.images.image_dir
    assert image_dir is not None
    fill(image_dir, 7, 1000)
    fill(tmp_path / "store" / "lenet5" / "1.0.1", 4, 2_500_000)
    client = logged_in(hub, "op")
    before = sqlite_bytes(tmp_path / "hub.db")

    page = client.get("/operator").get_data(as_text=True)

    assert "<h2>Storage</h2>" in page
    assert cell(page, "storage-images", "size") == "7.0 kB" and cell(page, "storage-images", "files") == "7"
    assert cell(page, "storage-store", "size") == "10.0 MB" and cell(page, "storage-store", "files") == "4"
    shown = re.fullmatch(r"(\d+\.\d) kB", cell(page, "storage-database", "size"))
    assert shown is not None  # the file and its -wal, as they were while the page was made (the hub writes on)
    assert before / 1000 - 0.05 <= float(shown[1]) <= sqlite_bytes(tmp_path / "hub.db") / 1000 + 0.05
    assert str(tmp_path / "hub.db") in page and str(image_dir) in page


def test_a_walk_stops_at_its_bound_says_at_least_and_follows_no_symlink(tmp_path: Path) -> None:
    fill(tmp_path / "many", 20, 10)
    bounded = folder_size(tmp_path / "many", max_entries=8)
    assert not bounded.complete and bounded.files < 8
    whole = folder_size(tmp_path / "many")
    assert (whole.complete, whole.files, whole.bytes) == (True, 20, 200)
    fill(tmp_path / "elsewhere", 5, 1000)
    (tmp_path / "many" / "link").symlink_to(tmp_path / "elsewhere")
    assert folder_size(tmp_path / "many").files == 20  # the linked folder is not counted
    missing = folder_size(tmp_path / "missing")
    assert missing.missing and (missing.files, missing.bytes, missing.error) == (0, 0, None)


def test_the_page_says_at_least_when_a_walk_was_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hgen.hub.web import storage

    monkeypatch.setattr(storage, "MAX_ENTRIES", 10)  # a store of millions of files, in small
    with web_hub(tmp_path, retrain={"store_dir": str(tmp_path / "store")}) as app:
        add_people(app, annotators=(), operators=("op",))
        fill(tmp_path / "store", 30, 10)
        page = logged_in(app, "op").get("/operator").get_data(as_text=True)
    files = cell(page, "storage-store", "files")
    assert files.startswith("at least ") and int(files.removeprefix("at least ")) < 10
    assert cell(page, "storage-store", "size").startswith("at least ")
    assert "stops after 10 entries" in page


def test_figures_are_measured_at_most_once_per_ttl(tmp_path: Path) -> None:
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    clock = Clock(100.0)
    try:
        gauge = StorageGauge(kb, tmp_path / "images", None, ttl_s=60.0, clock=clock)
        fill(tmp_path / "images", 2, 10)
        first = gauge.read()
        assert first.images is not None and first.images.files == 2 and first.store is None
        fill(tmp_path / "images", 5, 10)  # 3 more files
        clock.now += 59.0
        assert gauge.read() is first  # no walk within the minute
        clock.now += 1.0
        assert gauge.read().images.files == 5  # type: ignore[union-attr]
    finally:
        kb.close()


def test_the_database_size_on_sqlite_and_postgresql(kb_url: str, tmp_path: Path) -> None:  # noqa: F811
    kb = KnowledgeBase.open(kb_url)
    try:
        size = database_size(kb)
        assert size.error is None and size.bytes is not None and size.bytes > 0
        assert size.what.startswith("SQLite file" if kb_url.startswith("sqlite") else "PostgreSQL database")
    finally:
        kb.close()
