"""The agent pipeline: frames -> preprocessing -> inference -> gate -> results, with people in the loop.

Threads: the pipeline (source, inference, gate, emit), housekeeping (flush batches, patience timeouts, resend
from the outbox, status: `housekeeping.py`), the transport's own threads (replies: `replies.py`, update notices:
`updates.py`) and a swap thread. State shared between them sits behind one lock. Every escalated sample is committed
to the outbox before its first result is emitted (`escalation.py`), and is deleted only when its reply arrives.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace

import numpy as np

from hgen.edge_agent.adapt.prior import ClassPrior
from hgen.edge_agent.adapt.runner import Adaptation
from hgen.edge_agent.clock import SYSTEM_CLOCK, Clock
from hgen.edge_agent.config import AgentConfig
from hgen.edge_agent.errors import ResultDroppedError
from hgen.edge_agent.escalation import Escalation
from hgen.edge_agent.gating import Batcher, Decision, Gate, LabourBucket
from hgen.edge_agent.housekeeping import Housekeeping
from hgen.edge_agent.kinds import FrameSize
from hgen.edge_agent.model import FrameShapeError, Model, preprocess
from hgen.edge_agent.outbox import open_outbox
from hgen.edge_agent.replies import ReplyHandling, Waiting
from hgen.edge_agent.resend import ResendSchedule
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks import CallbackSink, Sink, close_sinks, open_sinks
from hgen.edge_agent.sources import Frame, FrameSource, open_source
from hgen.edge_agent.store import BundleStore, StoreKeeper, open_first_model
from hgen.edge_agent.swap import ModelSlot
from hgen.edge_agent.telemetry import PrometheusEndpoint, Telemetry
from hgen.edge_agent.transports import Transport, TransportCallbacks, open_transport
from hgen.edge_agent.updates import ModelUpdates
from hgen.runtime.bundle.extraction import remove_orphans
from hgen.runtime.familiarity import unfamiliar_frames

log = logging.getLogger(__name__)


class Agent(ReplyHandling, Escalation, Housekeeping, ModelUpdates):
    """`Agent(config, callbacks=[fn]).start()`; `wait()` for the source to end; `stop()`; `telemetry.snapshot()`."""

    def __init__(self, config: AgentConfig, *, callbacks: Sequence[Callable[[Result], None]] = (),
                 source: FrameSource | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self.telemetry = Telemetry(config.telemetry.latency_window, clock=clock.monotonic)
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        remove_orphans()  # what a killed run of this or another agent left in the temp folder
        with ExitStack() as undo:  # a part refused mid-way releases what is already open (temp dir, db, sinks)
            store = BundleStore(config.bundle.store_dir, config.bundle.path)
            model = open_first_model(config.bundle, store, tau=config.gate.tau, m=config.batching.annotators,
                                     on_problem=lambda text: self.telemetry.problem("bundle", text))
            undo.callback(model.close)
            self._open_parts(config, model, callbacks, source, undo)
            self.store = StoreKeeper(store, self._swap_lock, self.slot.running)
            undo.pop_all()

    def _open_parts(self, config: AgentConfig, model: Model, callbacks: Sequence[Callable[[Result], None]],
                    source: FrameSource | None, undo: ExitStack) -> None:
        self.slot = ModelSlot(model, config.swap, self._on_swap_event)
        self.outbox = open_outbox(config.outbox.path, config.outbox.max_samples, config.outbox.overflow,
                                  device_id=config.device_id, on_problem=self._outbox_damaged,
                                  max_bytes=config.outbox.max_bytes)
        undo.callback(self.outbox.close)
        self.sinks: list[Sink] = open_sinks(config.sinks) + [CallbackSink(cb) for cb in callbacks]
        self._sink_lost = 0  # results the sinks gave up on after taking them, counted in sink_errors so far
        undo.callback(close_sinks, self.sinks)
        self.gate = Gate(config.gate)
        self.batcher = Batcher(config.batching)
        self.labour = LabourBucket(config.batching.labour_share, config.batching.labour_window_frames)
        self.prior = ClassPrior(config.prior, self.telemetry, model) if config.prior.enabled else None
        self._source = source
        self._waiting: dict[str, Waiting] = {}
        self._done: OrderedDict[str, None] = OrderedDict()  # recently replied ids: duplicates are not "unknown"
        self._asks = ResendSchedule(config.hub.resend_after_s)
        self._resend_all = threading.Event()
        self._swap_lock = threading.RLock()  # downloads, loads and the bundle store's writes, one at a time
        self._seen_versions: set[str] = set()
        self._download_failures: dict[str, int] = {}  # version -> downloads that broke off (retry back-off)
        self._pipeline: threading.Thread | None = None
        self._housekeeper: threading.Thread | None = None
        self._finished = threading.Event()
        self.failure: Exception | None = None  # what stopped the pipeline early; `run` raises it
        self._end_of_stream = threading.Event()
        self._stopped = False
        self._closed = threading.Event()  # set when `stop` has closed everything
        self.metrics_endpoint: PrometheusEndpoint | None = None
        self.transport: Transport | None = None
        if config.hub.url:
            self.transport = open_transport(config.hub, config.device_id, TransportCallbacks(
                self._on_reply, self._on_update, self._on_transport_state))
            undo.callback(self.transport.stop)
        self.telemetry.gauge("outbox_depth", self.outbox.depth)
        self.telemetry.gauge("outbox_dropped", self.outbox.dropped)
        self.telemetry.gauge("outbox_bytes", self.outbox.stored_bytes)
        self.telemetry.gauge("waiting_for_people", lambda: len(self._waiting))
        self.telemetry.gauge("swap_ms", lambda: self.slot.last_switch_ms)
        self.telemetry.gauge("labour_ratio", self.labour.ratio)
        self.adapt = Adaptation(self, config.adapt) if config.adapt.variants is not None else None
        if self.adapt is not None:  # AdaSpring: the variant and tau chosen by context; it times people's replies
            self.sinks.append(CallbackSink(self.adapt.on_result))

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        return self.slot.active

    def start(self) -> Agent:
        """Open the source, restore unreplied samples from the outbox, start the threads and the hub link.

        If any of it fails the agent stops, releasing all it holds, and the error propagates: a caller that
        cannot start it has nothing left to clean up."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Agent:
        if self._source is None:
            self._source = open_source(self.config.source, self._stop)
        self._source.set_prepare(self._prepare)
        self._restore()
        if self.config.telemetry.prometheus_port is not None:
            self.metrics_endpoint = PrometheusEndpoint(self.telemetry, self.config.telemetry.prometheus_host,
                                                       self.config.telemetry.prometheus_port)
        if self.transport is not None:
            self.transport.start()
            if self.config.hub.watch_updates:
                self.transport.watch(self.model.name, self.model.version)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="agent-housekeeping", daemon=True)
        self._housekeeper.start()
        self._pipeline = threading.Thread(target=self._run_pipeline, name="agent-pipeline", daemon=True)
        self._pipeline.start()
        return self

    def end_stream(self) -> None:
        """Stop reading frames as if the source had ended, while replies for pending samples still arrive."""
        self._end_of_stream.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the source to end (or `stop`); True if it did within `timeout`."""
        return self._finished.wait(timeout)

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every escalated sample has a final result (fused, refused or timed out); a `stop` (SIGTERM)
        ends the wait at once, where it used to sit out the whole patience. True if all settled."""
        def settled() -> bool:
            return all(w.timeout_reported for w in self._waiting.values())

        with self._changed:
            self._changed.wait_for(lambda: self._stop.is_set() or settled(), timeout)
            return settled()

    def wait_outbox_empty(self, timeout: float) -> bool:
        """Wait until the hub replied to every stored sample."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.outbox.depth():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
            return True

    def run(self) -> None:
        """Blocking: start, process until the source ends, let replies settle within patience, stop.

        A pipeline that died (a source failing mid-stream) is raised after the orderly stop, so the process exits
        non-zero and a supervisor restarts it; its unreplied samples wait in the outbox for the next run."""
        self.start()
        try:
            while not self.wait(0.5):
                pass
            if not self._stop.is_set() and self.failure is None:
                self.wait_settled(self.config.batching.patience_s + self.config.batching.max_wait_s)
        finally:
            self.stop()
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        """Stop threads, close the hub link, sinks, models and the outbox (idempotent: a second caller, such as
        `run` ending after a signal handler's stop, waits up to 120 s for the first to close everything, so the
        process does not exit halfway through the close)."""
        with self._lock:
            first = not self._stopped
            self._stopped = True
        if not first:
            self._closed.wait(timeout=120)
            return
        try:
            self._close()
        finally:
            self._closed.set()

    def _close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in (self._pipeline, self._housekeeper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)
        if self.transport is not None:
            self.transport.stop()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        if self._source is not None:
            self._source.close()
        close_sinks(self.sinks)
        self._sync_sink_losses()
        self.store.close()
        self.slot.close()
        self.outbox.close()

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- pipeline ----------------------------------------------------------------------------------------

    def _run_pipeline(self) -> None:
        assert self._source is not None
        limit = self.config.source.max_frames
        processed = 0
        try:
            while not self._stop.is_set() and not self._end_of_stream.is_set() and (limit is None or processed < limit):
                frame = self._source.read()
                self._sync_source_stats()
                if frame is None:
                    break
                self.process_frame(frame)
                processed += 1
        except Exception as exc:
            self.failure = exc
            log.exception("pipeline failed")
            self.telemetry.problem("pipeline", f"pipeline stopped: {exc}")
        finally:
            self._sync_source_stats()
            self._finished.set()
            with self._changed:
                self._changed.notify_all()

    def process_frame(self, frame: Frame) -> Result:
        """One frame through the pipeline; always emits (and returns) a first result."""
        self.slot.maybe_switch()
        model = self.slot.active
        sample_id = str(uuid.uuid4())
        base = Result(frame.index, sample_id, frame.captured_at, ResultStatus.INVALID, "invalid",
                      bundle_version=model.version)
        if frame.image is None:
            return self._invalid(base, "frame could not be decoded")
        if frame.prepared is not None and frame.prepared[0] is model.manifest.input:
            x, resized = frame.prepared[1], frame.prepared[2]  # preprocessed on the reader thread
        else:
            try:
                x, resized = preprocess(frame.image, model.manifest.input)
            except FrameShapeError as exc:
                return self._invalid(base, str(exc))
        if resized:
            self.telemetry.inc("frames_resized")
        start = time.perf_counter()
        try:
            model, logits = self.slot.infer(x[None])
        except Exception as exc:
            self.telemetry.inc("inference_errors")
            self.telemetry.problem("inference", f"inference failed: {exc}")
            return self._invalid(base, f"inference failed: {exc}")
        self.telemetry.frame((time.perf_counter() - start) * 1e3)
        if not np.isfinite(logits).all():  # NaN counted as confident: a wrong answer nobody would be asked about
            self.telemetry.inc("outputs_not_finite")
            return self._invalid(base, "the model's output is not finite (NaN or infinite) for this frame")
        self.slot.observe(x)
        if model.version != base.bundle_version:  # a rollback happened during this frame
            base = replace(base, bundle_version=model.version)
        if self.prior is not None:  # SMART: the class mix seen so far re-weights what the gate and fusion get
            logits = self.prior.adjust(model, logits)
        return self._gate(frame, model, x, logits, base)

    def _prepare(self, frame: Frame) -> Frame:
        """Runs on the source's reader thread: preprocess for the active model so it overlaps inference; the
        pipeline redoes it if the model changed meanwhile, and reports bad frames itself."""
        spec = self.slot.active.manifest.input
        if frame.image is None:
            return frame
        try:
            x, resized = preprocess(frame.image, spec)
        except FrameShapeError:
            return frame
        return replace(frame, prepared=(spec, x, resized))

    def _invalid(self, base: Result, detail: str) -> Result:
        self.telemetry.inc("frames_invalid")
        self.telemetry.inc("frames")
        self.telemetry.problem("frames", detail)
        result = replace(base, detail=detail)
        self._emit(result)
        return result

    def _gate(self, frame: Frame, model: Model, x: np.ndarray, logits: np.ndarray, base: Result) -> Result:
        """The runtime kind's confidence against tau; the kind's adapter turns outputs into the result."""
        assert frame.image is not None
        confidence = model.confidence(logits)
        size = FrameSize.of(int(frame.image.shape[1]), int(frame.image.shape[0]), model.manifest.input)
        answer = model.adapter.answer_fields(model, logits, size)
        now = self.clock.monotonic()
        with self._lock:
            self.labour.frame()
        unfamiliar = bool(unfamiliar_frames(model.manifest.familiarity, x[None])[0])
        if unfamiliar:
            self.telemetry.inc("frames_unfamiliar")
        decision = model_decision = self.gate.decide(confidence, model.tau, now, unfamiliar)
        if decision is Decision.RATE_LIMITED:
            self.telemetry.inc("rate_limited")
        result = Result(base.frame_index, base.sample_id, base.captured_at, ResultStatus.MODEL, decision.value,
                        confidence=confidence, bundle_version=base.bundle_version, **answer)
        if self.prior is not None and decision is Decision.CONFIDENT:
            self.prior.trust(result.label)
        if model_decision.to_people and self.transport is not None:
            difficulty = model.labour_difficulty(logits, confidence)
            labour = self.batcher.labour_of(difficulty, model.m)
            stored = self._escalate(frame, model, logits, size, result, labour, decision, now)
            if stored is not None:
                return stored
            result = replace(result, decision=Decision.BUDGET.value)
        self._emit(result)
        return result

    def _emit(self, result: Result, skip_held: bool = False) -> bool:
        """To every sink that wants it (and, recovering after a crash, does not hold it already); False if one
        failed, so a journalled result is kept for re-delivery."""
        delivered = True
        for sink in self.sinks:
            try:
                if not sink.wants(result) or (skip_held and sink.holds(result)):
                    continue
                sink.emit(result)
            except Exception as exc:  # a sink must not stop the pipeline
                delivered = delivered and isinstance(exc, ResultDroppedError)  # dropped for good: not kept
                self.telemetry.inc("sink_errors")
                self.telemetry.problem("sink", f"{type(sink).__name__}: {exc}")
        return delivered

    def _sync_sink_losses(self) -> None:
        """Results a sink took and later gave up on count in sink_errors, as results it refused at once do."""
        lost = sum(sink.lost() for sink in self.sinks)
        self.telemetry.inc("sink_errors", lost - self._sink_lost)
        self._sink_lost = lost

    def _sync_source_stats(self) -> None:
        if self._source is None:
            return
        stats = self._source.stats
        with stats.lock:
            dropped, reconnects, problem = stats.dropped, stats.reconnects, stats.problem
        self.telemetry.inc("frames_dropped", dropped - self.telemetry.count("frames_dropped"))
        self.telemetry.inc("source_reconnects", reconnects - self.telemetry.count("source_reconnects"))
        self.telemetry.problem("source", problem)
