"""The operator page's export, made in the background: a large one took longer than a proxy waits for a response
(nginx's proxy_read_timeout is 60 s; 100,000 640x480 frames take about a minute on 2 cores, and a slow disk or a
busy database more), and the download then failed.

One export at a time per hub process. The operator starts it, the page says it is being made, then offers the zip
until `keep_s` has passed (a timer removes it then, whether or not anyone looks) or the next export replaces it; a
download may be repeated meanwhile. The zip is made in Python's temporary folder (TMPDIR: room for the export
twice; on a tmpfs /tmp that is memory). When the hub stops, an export being made is stopped between two labels and
waited for, and every file goes. The state lives in the process: behind a load balancer with several hub
processes, the page and the download must reach the one that made it (sticky sessions), or use `hgen-hub export`.
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
from typing import BinaryIO, Literal, Protocol

from hgen.hub.errors import ExportError, InvalidRequestError
from hgen.runtime.errors import HGenError

log = logging.getLogger(__name__)
KEEP_S = 3600.0  # a ready zip waits this long for its download
STOP_WAIT_S = 30.0  # at hub stop, how long an export being made has to notice and end
Make = Callable[[Path, Callable[[], bool]], Path]  # (a new empty folder, stopped?) -> the zip made in it
State = Literal["making", "ready", "failed"]


class Timer(Protocol):
    """threading.Timer's part used here."""

    daemon: bool

    def start(self) -> None: ...

    def cancel(self) -> None: ...


class ExportBusyError(ExportError):
    """An export is being made on this hub process already, or the hub is stopping."""


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


@dataclass
class _Run:
    """One export's thread, its folder, and the events it shares with the jobs: `done` is its own, so a stopped
    one ending late never says a newer one is done."""

    job: ExportJob
    folder: Path
    done: threading.Event
    expiry: Timer | None = None


class ExportJobs:
    """The process's one export: started, made in a daemon thread, offered, expired, stopped with the hub."""

    def __init__(self, keep_s: float = KEEP_S, clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[float, Callable[[], None]], Timer] = threading.Timer) -> None:
        """`timer(seconds, action)`: what removes a ready zip after `keep_s` (a daemon thread is started on it)."""
        self.keep_s = keep_s
        self.clock = clock
        self.timer = timer
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._stop = threading.Event()  # the hub is stopping: no new export, the one being made ends

    def start(self, model: str, name: str, make: Make) -> ExportJob:
        """Begin an export (ExportBusyError while one is being made, or the hub stops); the previous zip goes."""
        with self._lock:
            if self._stop.is_set():
                raise ExportBusyError("the hub is stopping")
            if self._run is not None and self._run.job.state == "making":
                raise ExportBusyError("an export is already being made on this hub process; this page shows when "
                                      "it is ready")
            self._drop()
            folder = Path(tempfile.mkdtemp(prefix="hgen-export-"))  # OSError (a full TMPDIR) reaches the caller
            run = _Run(ExportJob(secrets.token_urlsafe(16), model, name, "making", self.clock()), folder,
                       threading.Event())
            thread = threading.Thread(target=self._make, args=(run, make), name="hub-export", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had: nothing left claiming to be made
                shutil.rmtree(folder, ignore_errors=True)
                raise ExportError(f"cannot start the export: {exc}") from None
            self._run = run
        return run.job

    def current(self) -> ExportJob | None:
        with self._lock:
            return self._run.job if self._run is not None else None

    def seconds_left(self, job: ExportJob) -> float:
        """How long a ready zip is still kept (0 when not ready)."""
        if job.state != "ready" or job.finished_at is None:
            return 0.0
        return max(0.0, job.finished_at + self.keep_s - self.clock())

    def age(self, job: ExportJob) -> float:
        return max(0.0, self.clock() - job.started_at)

    def open(self, job_id: str) -> tuple[BinaryIO, ExportJob]:
        """The ready zip of `job_id`, opened under the lock (a replace or an expiry then only unlinks it: the open
        file keeps its bytes for the download)."""
        with self._lock:
            job = self._run.job if self._run is not None else None
            if job is None or job.state != "ready" or job.zip_path is None \
                    or not secrets.compare_digest(job.id.encode(), job_id[:64].encode()):
                raise InvalidRequestError("no such export is ready on this hub process (expired, replaced, or made "
                                          "by another one): start it again")
            try:
                return job.zip_path.open("rb"), job
            except OSError as exc:
                raise InvalidRequestError(f"the export's zip cannot be read ({exc.strerror or exc}): start it "
                                          "again") from None

    def wait(self, timeout: float) -> bool:
        """True when the current export is no longer being made (now or within `timeout` seconds): for tests."""
        with self._lock:
            run = self._run
        return run is None or run.done.wait(timeout)

    def close(self, wait_s: float = STOP_WAIT_S) -> None:
        """The hub stops: no new export; one being made stops between two labels and is waited for (before the
        knowledge base closes); every file goes."""
        with self._lock:
            self._stop.set()
            run = self._run
        if run is not None and not run.done.wait(wait_s):
            log.warning("the export being made did not stop within %.0f s; its files are removed anyway", wait_s)
        with self._lock:
            self._drop()
        if run is not None:
            shutil.rmtree(run.folder, ignore_errors=True)

    def _make(self, run: _Run, make: Make) -> None:
        outcome: dict = {"state": "failed", "message": "internal error (in the hub's log)"}
        try:
            archive = make(run.folder, self._stop.is_set)
            outcome = {"state": "ready", "size": archive.stat().st_size, "zip_path": archive}
        except (HGenError, OSError) as exc:  # no labels, a full disk, the database, the hub stopping: said
            outcome = {"state": "failed", "message": str(exc)[:300]}
        except Exception:  # noqa: BLE001 (a thread's last word: logged, and said on the page)
            log.exception("export %s failed", run.job.id)
        finally:
            self._finish(run, outcome)

    def _finish(self, run: _Run, outcome: dict) -> None:
        with self._lock:
            current = self._run is run and not self._stop.is_set()
            run.job = replace(run.job, finished_at=self.clock(), **outcome)
            if current and run.job.state == "ready":
                run.expiry = self.timer(self.keep_s, lambda: self._expire(run))
                run.expiry.daemon = True
                run.expiry.start()
            elif not current or run.job.state == "failed":
                shutil.rmtree(run.folder, ignore_errors=True)  # replaced, stopped or failed: its files go
            run.done.set()

    def _expire(self, run: _Run) -> None:
        with self._lock:
            if self._run is run:
                self._drop()

    def _drop(self) -> None:
        """Forget the current export (lock held) and remove its files; one still being made removes its own when
        it ends (its thread sees it is no longer current)."""
        run, self._run = self._run, None
        if run is None:
            return
        if run.expiry is not None:
            run.expiry.cancel()
        if run.done.is_set():
            shutil.rmtree(run.folder, ignore_errors=True)
