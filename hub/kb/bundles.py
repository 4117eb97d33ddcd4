"""Retention of the bundle archives the knowledge base keeps a copy of (part of the knowledge base).

Every recorded bundle keeps a copy of its archive in `bundles.archive` (hgen.hub.bundle_files: any hub sharing the
database serves it), and a hub that retrains every few days records one per target each time: hundreds of copies
after a year, never read again once devices moved on. `prune_bundle_archives` empties the copies of each bundle
name's versions except its first (the compile's, what a rollback goes back to) and its newest `keep_last` (what
devices run or may fetch); the rows stay (history, digests, signatures), and the publishing hub still serves
a pruned version from its own file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hgen.hub.errors import KnowledgeBaseError
from hgen.hub.kb.models import Bundle, Sample
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import version_key


@dataclass(frozen=True)
class ArchivePrune:
    """What one pruning emptied: archive copies, and their bytes."""

    archives: int = 0
    bytes_freed: int = 0


def running_bundle(s: Session, device_id: str,
                   status: hub_pb2.DeviceStatus | None) -> tuple[str, str] | None:
    """(bundle name, version) a device runs: from its last status report, else its newest sample (one seek in
    ix_samples_device_received); None when it has said neither. The operator page shows it, and store_dir pruning
    keeps its folder."""
    if status is not None and status.bundle_name:
        return status.bundle_name, status.bundle_version
    last = s.execute(select(Sample.bundle_name, Sample.bundle_version).where(Sample.device_id == device_id)
                     .order_by(Sample.received_at.desc()).limit(1)).first()
    return (last[0], last[1]) if last else None


def versions_to_empty(versions: list[str], keep_last: int) -> list[str]:
    """Of one name's versions holding a copy, those to empty: all but the first and the newest `keep_last`, by
    version number (1.0.10 after 1.0.9), not by the order they were recorded in."""
    ordered = sorted(versions, key=version_key)
    return ordered[1:-keep_last] if len(ordered) > keep_last + 1 else []


class BundleArchives:
    """Mixin of `KnowledgeBase` (which provides `session`)."""

    def prune_bundle_archives(self, keep_last: int) -> ArchivePrune:
        """Empty the archive copies of every bundle name's versions but its first and its newest `keep_last`."""
        if keep_last < 1:
            raise KnowledgeBaseError(f"keep_last must keep at least the newest version, got {keep_last}")
        with self.session() as s:  # type: ignore[attr-defined]
            held: dict[str, dict[str, int]] = defaultdict(dict)
            for name, version, size in s.execute(select(Bundle.name, Bundle.version, Bundle.size)
                                                 .where(Bundle.archive.is_not(None))):
                held[name][version] = int(size)
            pruned = ArchivePrune()
            for name, sizes in held.items():
                gone = versions_to_empty(list(sizes), keep_last)
                if gone:
                    s.execute(update(Bundle).where(Bundle.name == name, Bundle.version.in_(gone))
                              .values(archive=None).execution_options(synchronize_session=False))
                    pruned = ArchivePrune(pruned.archives + len(gone),
                                          pruned.bytes_freed + sum(sizes[v] for v in gone))
            return pruned
