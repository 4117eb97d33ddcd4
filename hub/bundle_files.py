"""A published bundle's archive, wherever this hub can read it: its file, or the copy in the knowledge base.

Why: hubs that share one database but not one disk (two machines behind one PostgreSQL and one broker) each serve
devices. A bundle one hub published lives on that hub's disk; the knowledge base keeps a copy of every archive it
records, so any hub serves any bundle (FetchBundle, a phone's download) and reads its target from the record.
"""

from __future__ import annotations

import functools
import io
import json
import os
from pathlib import Path
from typing import BinaryIO

from hgen.hub.errors import BundleMissingError
from hgen.hub.kb.store import BundleRecord, KnowledgeBase
from hgen.runtime.bundle.errors import BundleError
from hgen.runtime.bundle.loader import archive_manifest_bytes
from hgen.runtime.bundle.manifest import MANIFEST_NAME


@functools.lru_cache(maxsize=256)
def _target_of(path: str, _mtime_ns: int) -> str | None:
    try:
        if os.path.isdir(path):
            data = Path(path, MANIFEST_NAME).read_bytes()
        else:
            data = archive_manifest_bytes(Path(path))
        target = json.loads(data).get("target")
    except (OSError, BundleError, ValueError, AttributeError):
        return None
    return str(target) if target else None


def bundle_target(path: str) -> str | None:
    """The target written in a bundle's manifest, from its folder or archive (None when it cannot be read)."""
    try:
        return _target_of(path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


def record_target(record: BundleRecord) -> str | None:
    """The target a recorded bundle was built for: recorded with it, or (records from before) read from its file."""
    return record.target if record.target else bundle_target(record.path)


def open_archive(kb: KnowledgeBase, record: BundleRecord) -> BinaryIO:
    """The archive's bytes: its file when this hub can read it, else the knowledge base's copy."""
    try:
        return open(record.path, "rb")
    except OSError as exc:
        stored = kb.bundle_archive(record.name, record.version)
        if stored is None:
            raise BundleMissingError(f"bundle {record.name} {record.version}: {record.path} cannot be read here "
                                     f"({exc.strerror or exc}) and the knowledge base holds no copy (recorded before "
                                     "copies were kept, or an old version whose copy was pruned: fetch it from the "
                                     "hub that published it, or publish it again)") from exc
        return io.BytesIO(stored)
