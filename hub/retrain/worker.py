"""The retrain worker: a thread that watches the label count per model and runs retrains one at a time.

Ingestion only calls `notify()` (sets a flag under a condition), so a retrain never blocks a device or an
annotator. A model has at most one queued-or-running retrain; asking for another raises RetrainBusyError.
Label counts are re-read every `poll_s` too, so labels that another hub process stored also trigger.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from hgen.hub.errors import RetrainBusyError
from hgen.hub.retrain.pipeline import RetrainPipeline
from hgen.hub.retrain.records import RetrainStore, RunRecord

log = logging.getLogger(__name__)
RunListener = Callable[[RunRecord], None]
TRIGGERS = ("threshold", "operator", "cli", "api")


class RetrainWorker:
    """Queue + thread around RetrainPipeline; `wait(run_id)` and listeners tell when a retrain is done."""

    def __init__(self, pipeline: RetrainPipeline, store: RetrainStore, *, poll_s: float = 5.0) -> None:
        self.pipeline = pipeline
        self.store = store
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._active: dict[str, int] = {}  # model -> run id queued or running
        self._dirty = True
        self._stopping = False
        self._listeners: list[RunListener] = []
        self._thread: threading.Thread | None = None
        abandoned = store.abandon_active("the hub stopped before this retrain finished")
        if abandoned:
            log.warning("%d retrains left unfinished by a previous hub were marked failed", abandoned)

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> RetrainWorker:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="hub-retrain", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 600.0) -> None:
        """Stop after the running retrain (if any) finishes; queued ones are marked failed at next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def add_listener(self, listener: RunListener) -> None:
        """Called (on the worker thread) with every finished run: published, rejected or failed."""
        self._listeners.append(listener)

    # --- requests ---------------------------------------------------------------------------------------------

    def notify(self, *_: object) -> None:
        """New human labels may exist: cheap, never blocks on a retrain."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def request(self, model_name: str, trigger: str = "api") -> RunRecord:
        """Queue a retrain of `model_name` now, whatever the label count."""
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        self.pipeline.model_config(model_name)  # UnknownModelError before anything is stored
        with self._cond:
            if model_name in self._active:
                raise RetrainBusyError(f"retrain {self._active[model_name]} of {model_name!r} is already "
                                       f"queued or running; one at a time per model")
            current = self.pipeline.current(model_name)
            run = self.store.create_run(model_name, trigger, current.version)
            self._active[model_name] = run.id
            self._queue.append(run.id)
            self._cond.notify_all()
        log.info("retrain %d of %s queued (%s)", run.id, model_name, trigger)
        return run

    def wait(self, run_id: int, timeout: float) -> RunRecord:
        """Block until run `run_id` is finished; TimeoutError after `timeout` seconds."""
        with self._cond:
            finished = self._cond.wait_for(lambda: self._is_done(run_id), timeout)
        record = self.store.run(run_id)
        if not finished or record is None:
            raise TimeoutError(f"retrain {run_id} not finished after {timeout} s")
        return record

    def wait_for_run(self, model_name: str, after_id: int, timeout: float) -> RunRecord:
        """Block until a run of `model_name` newer than `after_id` has finished (e.g. one a threshold started)."""
        def newer() -> RunRecord | None:
            return next((r for r in self.store.runs(model_name, limit=5) if r.id > after_id and r.done), None)

        with self._cond:
            self._cond.wait_for(lambda: newer() is not None, timeout)
        found = newer()
        if found is None:
            raise TimeoutError(f"no retrain of {model_name!r} after run {after_id} finished within {timeout} s")
        return found

    def busy(self, model_name: str) -> bool:
        with self._cond:
            return model_name in self._active

    def _is_done(self, run_id: int) -> bool:
        if run_id in self._active.values():
            return False
        record = self.store.run(run_id)
        return record is not None and record.done

    # --- the thread -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._queue or self._dirty, self.poll_s)
                if self._stopping:
                    return
                check_thresholds, self._dirty = True, False
                run_id = self._queue.popleft() if self._queue else None
            if run_id is None and check_thresholds:
                self._check_thresholds()
                continue
            if run_id is not None:
                self._run(run_id)

    def _check_thresholds(self) -> None:
        for model in self.pipeline.config.models:
            try:
                if self.busy(model.name) or self.store.new_label_count(model.name) < model.threshold:
                    continue
                self.request(model.name, "threshold")
            except RetrainBusyError:
                continue
            except Exception:  # a bad model config must not stop the others from being checked
                log.exception("threshold check of %s failed", model.name)

    def _run(self, run_id: int) -> None:
        record = self.store.run(run_id)
        if record is None:
            return
        try:
            outcome = self.pipeline.execute(record)
        finally:
            with self._cond:
                self._active = {k: v for k, v in self._active.items() if v != run_id}
                self._dirty = True
                self._cond.notify_all()
        log.info("retrain %d of %s: %s %s", run_id, outcome.model_name, outcome.status, outcome.error or "")
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:
                log.exception("retrain listener failed")
