"""The operator page's export, made in the background: a large one took longer than a proxy waits for a response
(nginx's proxy_read_timeout is 60 s; 10,000 640x480 frames take about 30 s here), and the download then failed.

One export at a time per hub process. The operator starts it, the page says it is being made, then offers the zip
until `keep_s` has passed or the next export replaces it; a download may be repeated meanwhile. The zip is made in
Python's temporary folder (TMPDIR: room for the export twice), and removed when it expires, is replaced, or the hub
stops. The state lives in the process: behind a load balancer with several hub processes, the page and the download
must reach the one that made it (sticky sessions), or use `hgen-hub export` on the machine.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal

from hgen.hub.errors import ExportError, InvalidRequestError
from hgen.runtime.errors import HGenError

log = logging.getLogger(__name__)
KEEP_S = 3600.0  # a ready zip waits this long for its download
Make = Callable[[Path], Path]  # (a new empty folder) -> the zip made in it
State = Literal["making", "ready", "failed"]


class ExportBusyError(ExportError):
    """An export is being made on this hub process already."""


@dataclass(frozen=True)
class ExportJob:
    """What the operator page shows of the current export."""

    id: str
    model: str
    name: str  # the download's stem: `<model>-labels`
    state: State
    started_at: float
    finished_at: float | None = None
    message: str = ""  # why it failed
    size: int = 0
    zip_path: Path | None = None

    def expires_at(self, keep_s: float) -> float | None:
        return self.finished_at + keep_s if self.finished_at is not None and self.state == "ready" else None


class ExportJobs:
    """The process's one export: started, made in a daemon thread, offered, expired."""

    def __init__(self, keep_s: float = KEEP_S, clock: Callable[[], float] = time.time) -> None:
        self.keep_s = keep_s
        self.clock = clock
        self._lock = threading.Lock()
        self._job: ExportJob | None = None
        self._folder: Path | None = None
        self._done = threading.Event()
        self._done.set()

    def start(self, model: str, name: str, make: Make) -> ExportJob:
        """Begin an export (ExportBusyError while one is being made); the previous zip, if any, goes."""
        with self._lock:
            if self._job is not None and self._job.state == "making":
                raise ExportBusyError("an export is already being made on this hub process; this page shows when "
                                      "it is ready")
            self._drop()
            folder = Path(tempfile.mkdtemp(prefix="hgen-export-"))  # OSError (a full TMPDIR) reaches the caller
            job = ExportJob(secrets.token_urlsafe(16), model, name, "making", self.clock())
            self._job, self._folder = job, folder
            self._done.clear()
        threading.Thread(target=self._make, args=(job.id, folder, make), name="hub-export", daemon=True).start()
        return job

    def current(self) -> ExportJob | None:
        """The export to show: None once a ready zip has expired (then removed)."""
        with self._lock:
            job = self._job
            expires = job.expires_at(self.keep_s) if job is not None else None
            if expires is not None and self.clock() >= expires:
                self._drop()
                return None
            return job

    def open(self, job_id: str) -> tuple[BinaryIO, ExportJob]:
        """The ready zip of `job_id`, opened: the open file keeps its bytes if it expires mid-download."""
        job = self.current()
        if job is None or not secrets.compare_digest(job.id, job_id[:64]) or job.state != "ready":
            raise InvalidRequestError("no such export is ready on this hub process (expired, replaced, or made by "
                                      "another one): start it again")
        assert job.zip_path is not None
        return job.zip_path.open("rb"), job

    def wait(self, timeout: float) -> bool:
        """True when no export is being made (now or within `timeout` seconds): for tests and shutdown."""
        return self._done.wait(timeout)

    def close(self) -> None:
        """The hub stops: its zip goes (one still being made removes its own folder when it ends)."""
        with self._lock:
            self._drop()

    def _make(self, job_id: str, folder: Path, make: Make) -> None:
        try:
            archive = make(folder)
            done = {"state": "ready", "size": archive.stat().st_size, "zip_path": archive}
        except (HGenError, OSError) as exc:  # no labels, a full disk, the database: said on the page
            done = {"state": "failed", "message": str(exc)[:300]}
        except Exception:  # noqa: BLE001 (a thread's last word: logged, and said on the page)
            log.exception("export %s failed", job_id)
            done = {"state": "failed", "message": "internal error (in the hub's log)"}
        with self._lock:
            if self._job is not None and self._job.id == job_id:
                self._job = replace(self._job, finished_at=self.clock(), **done)
                if done["state"] == "failed":
                    self._drop_folder()
            else:  # replaced or closed while it was made
                shutil.rmtree(folder, ignore_errors=True)
            self._done.set()

    def _drop(self) -> None:
        """Forget the current export and remove its folder; one still being made removes its own when it ends."""
        if self._job is not None and self._job.state == "making":
            self._folder = None
        self._drop_folder()
        self._job = None

    def _drop_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
