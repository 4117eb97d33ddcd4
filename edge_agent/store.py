"""The device's bundle store (`bundle.store_dir`): which bundle runs, so a restart resumes it, and no more files
than that.

The hub retrains in the field and pushes each new version; a device that reboots (power cut, update, crash) must
come back on the model the field taught, even while the hub is out of reach, not on the bundle its kit was
flashed with. After every swap or rollback the agent records the running bundle in `current.json`; at start it
loads that bundle again (verified like any other) when it descends from the configured `bundle.path`, i.e. when
the operator has not flashed a different bundle since. Downloads other than the running, previous and staged
bundles are deleted, so a device receiving a bundle a day does not fill its card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from hgen.edge_agent.config import BundleConfig
from hgen.edge_agent.model import Model, load_model
from hgen.runtime.bundle import MANIFEST_NAME

POINTER = "current.json"

log = logging.getLogger(__name__)


def durable_replace(written: Path, dest: Path) -> None:
    """Move a fully written file into place so that a power cut afterwards leaves either the old or the new file,
    never an empty one: an SD card's page cache holds the data for seconds, and a rename alone can reach the card
    before the data it names. The file is flushed, renamed, then its folder flushed (the rename itself)."""
    with open(written, "rb") as handle:
        os.fsync(handle.fileno())
    written.replace(dest)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def bundle_identity(path: Path) -> str:
    """SHA-256 of an archive, or of a bundle folder's signed manifest (which pins every file's hash)."""
    source = path / MANIFEST_NAME if path.is_dir() else path
    return hashlib.sha256(source.read_bytes()).hexdigest()


@dataclass(frozen=True)
class BundleStore:
    """`store_dir` and the configured bundle the device was given (`base`)."""

    folder: Path
    base: Path

    @cached_property
    def base_identity(self) -> str:
        """Hashed once per agent (at its start when there is a record to judge, else at its first swap), not at
        every swap."""
        return bundle_identity(self.base)

    @property
    def pointer(self) -> Path:
        return self.folder / POINTER

    def resume_path(self) -> Path | None:
        """The bundle recorded as running, if it descends from `base` and is still there; else None (start from
        `base`). An unreadable record is logged and ignored."""
        try:
            record = json.loads(self.pointer.read_text())
            path, base = Path(record["path"]), record["base"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s (%s); starting from %s", self.pointer, exc, self.base)
            return None
        if not self.base.exists():
            return None  # starting from base then names the missing bundle with the loader's typed error
        if base != self.base_identity:
            log.info("bundle.path changed since %s was recorded; starting from %s", path.name, self.base)
            return None
        return path if path.exists() else None

    def record(self, running: Path, version: str, keep: Iterable[Path]) -> None:
        """Remember `running` for the next start (atomically), then delete the store's other downloads."""
        if running.resolve() == self.base.resolve():
            self.pointer.unlink(missing_ok=True)
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            data = {"path": str(running.resolve()), "version": version, "base": self.base_identity}
            partial = self.pointer.with_suffix(".tmp")
            partial.write_text(json.dumps(data), encoding="utf-8")
            durable_replace(partial, self.pointer)
        self.prune({running, self.base, *keep})

    def prune(self, keep: Iterable[Path]) -> list[Path]:
        """Delete downloaded archives (`*.hgb` directly in the store) other than `keep`, and partial downloads
        (`*.part`: a download cut off by a power loss is started afresh, never resumed). Runs under the swap lock,
        so no download is under way."""
        kept = {path.resolve() for path in keep}
        removed = [path for path in sorted(self.folder.glob("*.hgb")) if path.resolve() not in kept]
        removed += sorted(self.folder.glob("*.part"))
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            log.info("removed %d old bundle(s) from %s", len(removed), self.folder)
        return removed


RunningState = Callable[[], tuple[Path, str, tuple[Path, ...]]]  # running bundle, its version, bundles to keep


class StoreKeeper:
    """Records the running bundle off the frame path: the pipeline switches models between two frames, and the
    file writes (with an fsync on an SD card) happen on one writer thread, in order. Each write reads the state
    when it runs, so of two swaps in quick succession the later one is what stays recorded."""

    def __init__(self, store: BundleStore, lock: AbstractContextManager[Any], state: RunningState) -> None:
        self.store = store
        self._lock = lock  # the agent's swap lock: no download is half-written while the store is pruned
        self._state = state
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-store")

    def record_soon(self) -> None:
        try:
            self._writer.submit(self._record)
        except RuntimeError:  # stopped: a swap racing the agent's stop is not recorded
            log.info("agent stopped: the bundle store keeps its last record")

    def flush(self) -> None:
        """Wait for the writes asked for so far (one writer, in order: a no-op queued behind them)."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        """Finish every pending write and stop the writer (the agent's stop)."""
        self._writer.shutdown(wait=True)

    def _record(self) -> None:
        with self._lock:
            running, version, keep = self._state()
            try:
                self.store.record(running, version, keep)
            except OSError as exc:  # a full or read-only card: the device keeps running, the next start uses base
                log.error("could not record the running bundle in %s: %s", self.store.folder, exc)


def open_first_model(config: BundleConfig, store: BundleStore, *, tau: float | None, m: int | None,
                     on_problem: Callable[[str], None]) -> Model:
    """The recorded running bundle when `resume` is on and it still verifies and loads, else `config.path`."""
    resume = store.resume_path() if config.resume else None
    if resume is not None:
        try:
            return load_model(resume, config, tau=tau, m=m)
        except Exception as exc:  # noqa: BLE001 - any refusal of the stored copy falls back to the flashed bundle
            log.error("could not resume %s (%s); starting from %s", resume, exc, config.path)
            on_problem(f"could not resume {resume.name} ({type(exc).__name__}: {exc}); started from {config.path}")
    return load_model(config.path, config, tau=tau, m=m)
