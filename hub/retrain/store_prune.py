"""Retention of `retrain.store_dir`: old model version folders and finished re-search work folders.

Every retrain, rollback and publish writes `store_dir/<model>/<version>/` (the Keras file, one signed bundle folder
and archive per target), and every re-search `store_dir/<model>/research-<run id>/` (the compile's output); nothing
removed them, so a hub left running for months filled its disk. After each publish of a model (under its retrain
lease, so no retrain or release of that model reads a folder meanwhile) `prune_store` removes that model's version
folders except the ones something may still need:

- the first version (the compile's; the acceptance check's drift reference, a rollback target) and the newest
  `retrain.keep_bundle_archives`: the rule the knowledge base empties its archive copies by (`hgen.hub.kb.bundles`),
  so what devices may fetch keeps its file or its copy;
- the version the deployed one replaced: what a rollback without `--to` restores;
- every version a device reports it runs (its last status, else its newest sample: the operator page's rule);
- every folder a kept version's record points into: a rollback's version keeps the restored version's Keras file
  (`hgen.hub.retrain.release`), so that version's folder stays while the rollback's does (and, in turn, every
  folder that one's record points into: whatever folder stays is a complete rollback target).

Only real folders (never a symlink, never followed) named after a version this model recorded, whose record's bundle
folder lies inside it (one hgen wrote), are removed; anything else under the store is left alone. A re-search's work
folder is removed once its run has ended, except the newest `keep_last` (their search journal and report explain
recent re-searches); `research-check` is a path no step writes. A folder that cannot be removed is logged and
counted, and never fails the publish: the next publish tries again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from hgen.hub.gold import GOLD_DEVICE
from hgen.hub.kb.bundles import running_bundle, versions_to_empty
from hgen.hub.kb.models import Device, RetrainRun
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain.records import ACTIVE_STATES, RetrainStore, VersionRecord
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import version_key

log = logging.getLogger(__name__)
RESEARCH_DIR = re.compile(r"^research-(\d+)$")


@dataclass(frozen=True)
class StorePrune:
    """What one pruning of a model's store folder removed, and what it could not."""

    versions: tuple[str, ...] = ()  # version folders removed
    research: tuple[int, ...] = ()  # run ids whose research-<id> folder was removed
    bytes_freed: int = 0
    failures: tuple[str, ...] = ()  # folders that could not be (wholly) removed, with why
    kept: tuple[str, ...] = ()  # the versions kept, and why (for the log)


def versions_to_keep(versions: Iterable[VersionRecord], keep_last: int, *, replaced: str | None = None,
                     devices_run: Collection[str] = ()) -> dict[str, str]:
    """version -> why it stays: the first and the newest `keep_last` (`versions_to_empty`'s complement), the one the
    deployed version replaced, and those devices run."""
    records = list(versions)
    dropped = set(versions_to_empty([v.version for v in records], keep_last))
    keep = {v.version: "first or newest" for v in records if v.version not in dropped}
    if replaced is not None:
        keep.setdefault(replaced, "the deployed version replaced it (rollback target)")
    for version in devices_run:
        keep.setdefault(version, "a device runs it")
    return keep


def referenced_versions(records: Iterable[VersionRecord], model_dir: Path) -> set[str]:
    """The version folders under `model_dir` that these records' Keras files and bundle folders lie in."""
    bases = {_norm(model_dir), os.path.realpath(model_dir)}
    found = set()
    for record in records:
        for path in (record.keras_path, record.bundle_dir):
            folder = _folder_under(path, bases)
            if folder is not None:
                found.add(folder)
    return found


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def _folder_under(path: str, bases: Collection[str]) -> str | None:
    """The first path component of `path` below one of `bases` (literally or once symlinks are resolved)."""
    for candidate in (_norm(path), os.path.realpath(path)):
        for base in bases:
            if candidate.startswith(base + os.sep):
                return candidate[len(base) + 1:].split(os.sep, 1)[0]
    return None


def versions_devices_run(kb: KnowledgeBase, bundle_names: Collection[str]) -> set[str]:
    """Versions of these bundle names (or `<name>-<target>` of them) devices run: from each device's last status,
    else its newest sample (one index seek, ix_samples_device_received). Conservative: a name that merely starts
    with `<name>-` counts too (keeping a folder too many is harmless)."""

    def ours(bundle: str) -> bool:
        return any(bundle == name or bundle.startswith(f"{name}-") for name in bundle_names)

    found = set()
    with kb.session() as s:
        fleet = s.execute(select(Device.id, Device.last_status).where(Device.id != GOLD_DEVICE)).all()
        for device_id, raw in fleet:
            running = running_bundle(s, device_id, hub_pb2.DeviceStatus.FromString(raw) if raw else None)
            if running is not None and ours(running[0]):
                found.add(running[1])
    return found


def replaced_version(kb: KnowledgeBase, name: str, current: str) -> str | None:
    """The version the deployed one replaced (`Releases.previous`): what a rollback without `--to` restores."""
    with kb.session() as s:
        return s.scalar(select(RetrainRun.from_version)
                        .where(RetrainRun.model_name == name, RetrainRun.status == "published",
                               RetrainRun.to_version == current)
                        .order_by(RetrainRun.id.desc()).limit(1))


def prune_store(store: RetrainStore, store_dir: Path | None, name: str, keep_last: int,
                bundle_names: Collection[str] = ()) -> StorePrune:
    """Remove `name`'s version folders nothing needs and its ended re-searches' work folders (module doc). Never
    raises: a publish is recorded and announced already; what went wrong is logged and counted."""
    if store_dir is None:
        return StorePrune()
    try:
        pruned = _prune(store, Path(store_dir), name, keep_last, {name, *bundle_names})
    except Exception as exc:  # noqa: BLE001 (published already; the next publish tries again)
        log.error("old version folders of %s in %s were not pruned: %s", name, store_dir, exc)
        return StorePrune(failures=(f"{store_dir}: {exc}",))
    if pruned.versions or pruned.research or pruned.failures:
        log.info("pruned %s in %s: removed versions %s and %d re-search folders (%.1f MB); kept %s%s", name,
                 store_dir, ", ".join(pruned.versions) or "none", len(pruned.research), pruned.bytes_freed / 1e6,
                 "; ".join(pruned.kept),
                 f"; {len(pruned.failures)} could not be removed" if pruned.failures else "")
    return pruned


def _prune(store: RetrainStore, store_dir: Path, name: str, keep_last: int, bundle_names: set[str]) -> StorePrune:
    model_dir = Path(os.path.realpath(store_dir)) / name
    if os.path.islink(model_dir) or not model_dir.is_dir():
        return StorePrune()  # a symlinked model folder is not one hgen made: left alone
    records = store.versions(name)
    if not records:
        return StorePrune()
    why = versions_to_keep(records, keep_last, replaced=replaced_version(store.kb, name, records[0].version),
                           devices_run=versions_devices_run(store.kb, bundle_names))
    while more := referenced_versions([r for r in records if r.version in why], model_dir) - set(why):
        why.update(dict.fromkeys(more, "a kept version's files are in it"))  # and that one's, in turn
    removed, failures, freed = [], [], 0
    for record in records:
        if record.version in why or not _written_by_hgen(model_dir, record):
            continue
        size, error = remove_folder(model_dir / record.version)
        freed += size
        if error is None:
            removed.append(record.version)
        else:
            failures.append(error)
    research, research_failures, research_freed = _prune_research(store.kb, model_dir, name, keep_last)
    kept = tuple(f"{v} ({reason})" for v, reason in sorted(why.items(), key=lambda i: version_key(i[0])))
    return StorePrune(tuple(sorted(removed, key=version_key)), research, freed + research_freed,
                      tuple(failures + research_failures), kept)


def _written_by_hgen(model_dir: Path, record: VersionRecord) -> bool:
    """A real folder (not a symlink) named after the recorded version, holding that record's bundle folder."""
    folder = model_dir / record.version
    if record.version in ("", ".", "..") or os.sep in record.version or os.path.islink(folder) \
            or not folder.is_dir():
        return False
    return _folder_under(record.bundle_dir, {_norm(model_dir), os.path.realpath(model_dir)}) == record.version


def _prune_research(kb: KnowledgeBase, model_dir: Path, name: str,
                    keep_last: int) -> tuple[tuple[int, ...], list[str], int]:
    """research-<run id> folders of this model's re-search runs that ended, but the newest `keep_last` of them."""
    folders = {}
    with os.scandir(model_dir) as entries:
        for entry in entries:
            match = RESEARCH_DIR.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                folders[int(match[1])] = Path(entry.path)
    if not folders:
        return (), [], 0
    with kb.session() as s:
        ended = sorted((run_id for run_id, in s.execute(
            select(RetrainRun.id).where(RetrainRun.id.in_(folders), RetrainRun.model_name == name,
                                        RetrainRun.research.is_(True), RetrainRun.status.not_in(ACTIVE_STATES)))),
                       reverse=True)
    removed, failures, freed = [], [], 0
    for run_id in ended[keep_last:]:
        size, error = remove_folder(folders[run_id])
        freed += size
        if error is None:
            removed.append(run_id)
        else:
            failures.append(error)
    return tuple(sorted(removed)), failures, freed


def remove_folder(folder: Path) -> tuple[int, str | None]:
    """Remove `folder` and what is in it without following any symlink (symlinks inside are removed as links);
    returns the bytes its files held and, when something stayed, why."""
    size = folder_bytes(folder)
    errors: list[str] = []

    def failed(_function: object, path: str, exc: object) -> None:
        errors.append(f"{path}: {exc[1] if isinstance(exc, tuple) else exc}")

    if os.path.islink(folder):
        return 0, f"{folder}: a symlink, not removed"
    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=failed)
    else:
        shutil.rmtree(folder, onerror=failed)
    if errors:
        log.error("could not remove %s: %s", folder, "; ".join(errors[:3]))
        return 0, f"{folder}: {errors[0]}"
    return size, None


def folder_bytes(folder: Path) -> int:
    """The bytes of the regular files under `folder`, symlinks not followed (a version folder holds a few files)."""
    total = 0
    for root, _dirs, files in os.walk(folder):  # os.walk does not descend into symlinked folders
        for file in files:
            try:
                info = os.lstat(os.path.join(root, file))
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total
