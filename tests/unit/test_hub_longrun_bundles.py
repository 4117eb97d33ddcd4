"""Bundle archives a long-running hub keeps (review of a hub left running for months): every recorded version keeps
a copy of its archive in the knowledge base, one per target at every retrain, and nothing ever removed one.
`prune_bundle_archives` keeps each name's first version and its newest K (by version number) and empties the
others' copies; the rows stay, the newest is still served from the database, and a pruned version is refused with
a clear error on a hub without its file. SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgen.hub.bundle_files import open_archive
from hgen.hub.errors import BundleMissingError, KnowledgeBaseError
from hgen.hub.kb.store import BundleRecord, KnowledgeBase
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)

VERSIONS = [f"1.0.{patch}" for patch in range(12)]  # 1.0.10 and 1.0.11 sort after 1.0.9


def record(name: str, version: str, tmp_path: Path) -> BundleRecord:
    data = f"{name} {version}".encode() * 100
    return BundleRecord(name, version, "0" * 64, len(data), b"sig", str(tmp_path / "gone" / f"{version}.hgb"),
                        1.0, "", "rpi4", data)


def test_old_bundle_archives_are_pruned_keeping_first_and_newest(kb_url: str, tmp_path: Path) -> None:  # noqa: F811
    kb = KnowledgeBase.open(kb_url, image_dir=tmp_path / "img")
    try:
        for version in reversed(VERSIONS):  # recorded in any order
            kb.add_bundle(record("lenet5", version, tmp_path))
        kb.add_bundle(record("lenet5-esp32", "1.0.0", tmp_path))
        pruned = kb.prune_bundle_archives(keep_last=3)
        assert pruned.archives == len(VERSIONS) - 4
        assert pruned.bytes_freed == sum(record("lenet5", v, tmp_path).size for v in VERSIONS[1:-3])
        kept = {v for v in VERSIONS if kb.bundle_archive("lenet5", v) is not None}
        assert kept == {"1.0.0", "1.0.9", "1.0.10", "1.0.11"}
        assert kb.bundle_archive("lenet5-esp32", "1.0.0") is not None  # a name's only version stays
        assert kb.bundle("lenet5", "1.0.5") is not None  # the row stays
        newest = kb.bundle("lenet5")
        assert newest is not None and open_archive(kb, newest).read() == record("lenet5", "1.0.11", tmp_path).archive
        old = kb.bundle("lenet5", "1.0.5")
        assert old is not None
        with pytest.raises(BundleMissingError, match="pruned"):
            open_archive(kb, old)
        assert kb.prune_bundle_archives(keep_last=3).archives == 0  # nothing more to do
        with pytest.raises(KnowledgeBaseError):
            kb.prune_bundle_archives(keep_last=0)
    finally:
        kb.close()
