"""The retrain worker: a thread that watches the label count per model and runs retrains one at a time.

Ingestion only calls `notify()` (sets a flag under a condition), so a retrain never blocks a device or an
annotator. A model has at most one queued-or-running retrain across every hub process on the database: a run is
queued only under the model's lease (table `retrain_leases`), which a `LeaseKeeper` thread renews while the run
is queued or running; asking for another raises RetrainBusyError. Label counts are re-read every `poll_s` too,
so labels that another hub process stored also trigger.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable

from hgen.hub.errors import RetrainBusyError, RetrainTriggerError, RetrainWaitTimeoutError
from hgen.hub.retrain.pipeline import RetrainPipeline
from hgen.hub.retrain.records import RetrainStore, RunRecord
from hgen.hub.retrain.ticker import Ticker

log = logging.getLogger(__name__)
RunListener = Callable[[RunRecord], None]
TRIGGERS = ("threshold", "operator", "cli", "api")
LEASE_TTL_S = 60.0  # a crashed hub's lease blocks its model's retrains this long at most


def holder_id(role: str = "worker") -> str:
    """Unique per worker (host, process, random): two workers in one process are two holders."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseKeeper:
    """Renews `holder`'s leases on `models()` every ttl/3 on a thread: they outlive a long retrain, and lapse
    within one TTL once the process dies (nothing renews them any more)."""

    def __init__(self, store: RetrainStore, holder: str, ttl_s: float, models: Callable[[], Iterable[str]]) -> None:
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self.models = models
        self._ticker = Ticker(self.renew, ttl_s / 3, "hub-retrain-lease")

    def start(self) -> LeaseKeeper:
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._ticker.stop()

    def renew(self) -> None:
        for model in list(self.models()):
            try:
                if not self.store.renew_lease(model, self.holder, self.ttl_s):
                    log.error("retrain lease of %s was lost (it expired and another hub took it over)", model)
            except Exception:  # a database hiccup: the next round tries again, well within the TTL
                log.exception("renewing the retrain lease of %s failed", model)



class RetrainWorker:
    """Queue + thread around RetrainPipeline; `wait(run_id)` and listeners tell when a retrain is done."""

    def __init__(self, pipeline: RetrainPipeline, store: RetrainStore, *, poll_s: float = 5.0,
                 lease_ttl_s: float = LEASE_TTL_S, holder: str | None = None) -> None:
        self.pipeline = pipeline
        self.store = store
        self.poll_s = poll_s
        self.lease_ttl_s = lease_ttl_s
        self.holder = holder or holder_id()
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._active: dict[str, int] = {}  # model -> run id queued or running
        self._dirty = True
        self._stopping = False
        self._listeners: list[RunListener] = []
        self._thread: threading.Thread | None = None
        self._keeper = LeaseKeeper(store, self.holder, lease_ttl_s, self._active_models)
        abandoned = store.abandon_active("the hub stopped before this retrain finished")
        if abandoned:
            log.warning("%d retrains left unfinished by a previous hub were marked failed", abandoned)

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> RetrainWorker:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="hub-retrain", daemon=True)
        self._thread.start()
        self._keeper.start()
        return self

    def stop(self, timeout: float = 600.0) -> None:
        """Stop after the running retrain (if any) finishes; queued ones are marked failed and their leases freed
        (a retrain still running after `timeout` keeps its lease until it expires: nothing renews it any more)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._keeper.stop()
        self._drop_queued("the hub stopped before this retrain started")

    def add_listener(self, listener: RunListener) -> None:
        """Called (on the worker thread) with every finished run: published, rejected or failed."""
        self._listeners.append(listener)

    # --- requests ---------------------------------------------------------------------------------------------

    def notify(self, *_: object) -> None:
        """New human labels may exist: cheap, never blocks on a retrain."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def request(self, model_name: str, trigger: str = "api", *, research: bool = False) -> RunRecord:
        """Queue a retrain of `model_name` now, whatever the label count; `research` also searches a new plan
        and tau (the model needs a `compile_config`)."""
        if trigger not in TRIGGERS:
            raise RetrainTriggerError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        self.pipeline.model_config(model_name)  # UnknownModelError before anything is stored
        if research:
            self.pipeline.check_research(model_name)  # RetrainError before anything is stored
        with self._cond:
            if model_name in self._active:
                raise RetrainBusyError(f"retrain {self._active[model_name]} of {model_name!r} is already "
                                       f"queued or running on this hub; one at a time per model")
            current = self.pipeline.current(model_name)
            run = self.store.claim_run(model_name, trigger, current.version, self.holder, self.lease_ttl_s,
                                       research=research)
            self._active[model_name] = run.id
            self._queue.append(run.id)
            self._cond.notify_all()
        log.info("retrain %d of %s queued (%s%s)", run.id, model_name, trigger, ", re-search" if research else "")
        return run

    def wait(self, run_id: int, timeout: float) -> RunRecord:
        """Block until run `run_id` is finished; RetrainWaitTimeoutError (a TimeoutError) after `timeout` seconds."""
        with self._cond:
            finished = self._cond.wait_for(lambda: self._is_done(run_id), timeout)
        record = self.store.run(run_id)
        if not finished or record is None:
            raise RetrainWaitTimeoutError(f"retrain {run_id} not finished after {timeout} s")
        return record

    def wait_for_run(self, model_name: str, after_id: int, timeout: float) -> RunRecord:
        """Block until a run of `model_name` newer than `after_id` has finished (e.g. one a threshold started)."""
        def newer() -> RunRecord | None:
            return next((r for r in self.store.runs(model_name, limit=5) if r.id > after_id and r.done), None)

        with self._cond:
            self._cond.wait_for(lambda: newer() is not None, timeout)
        found = newer()
        if found is None:
            raise RetrainWaitTimeoutError(f"no retrain of {model_name!r} after run {after_id} finished within {timeout} s")
        return found

    def busy(self, model_name: str) -> bool:
        """A retrain of `model_name` is queued or running here or on another hub process."""
        with self._cond:
            if model_name in self._active:
                return True
        return self.store.live_lease(model_name) is not None

    def _active_models(self) -> list[str]:
        with self._cond:
            return list(self._active)

    def _drop_queued(self, reason: str) -> None:
        with self._cond:
            left, self._queue = list(self._queue), deque()
            models = {run_id: model for model, run_id in self._active.items() if run_id in left}
            self._active = {k: v for k, v in self._active.items() if v not in left}
            self._cond.notify_all()
        for run_id, model in models.items():
            self.store.fail_if_active(run_id, reason)
            self.store.release_lease(model, self.holder)

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
        try:
            if record is None or record.done:  # failed meanwhile by a hub that took over our expired lease
                return
            outcome = self.pipeline.execute(record)
        finally:
            if record is not None:
                self._release(record.model_name)
            with self._cond:
                self._active = {k: v for k, v in self._active.items() if v != run_id}
                self._dirty = True
                self._cond.notify_all()
        log.info("retrain %d of %s: %s %s", run_id, outcome.model_name, outcome.status,
                 outcome.error or f"{outcome.from_version} -> {outcome.to_version}")
        self._tell(outcome)

    def _release(self, model_name: str) -> None:
        try:
            self.store.release_lease(model_name, self.holder)
        except Exception:  # it expires within one TTL anyway
            log.exception("releasing the retrain lease of %s failed", model_name)

    def _tell(self, outcome: RunRecord) -> None:
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:
                log.exception("retrain listener failed")
