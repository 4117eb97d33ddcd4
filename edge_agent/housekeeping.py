"""The agent's housekeeping thread: flush due batches, time out samples past patience, ask the hub again (a bounded,
acknowledged stream from the outbox), report status; and restoring the outbox's samples after a restart.

A mixin of `Agent`, split out so each file holds one responsibility.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from hgen.edge_agent.errors import OutboxError
from hgen.edge_agent.kinds import WHOLE_INPUT, FrameSize
from hgen.edge_agent.outbox import OutboxRow, StoredSample
from hgen.edge_agent.replies import Waiting
from hgen.edge_agent.resend import RESEND_WINDOW
from hgen.edge_agent.results import Result, ResultStatus
from hgen.protos import hub_pb2
from hgen.runtime.hdnn import FusionParams

if TYPE_CHECKING:
    from hgen.edge_agent.agent import Agent

log = logging.getLogger("hgen.edge_agent.agent")
TICK_S = 0.05  # housekeeping wakes at least this often (batch max-wait and patience resolution)
RESEND_CHUNK = 32  # outbox rows read per step of a resend scan: 32 full-frame images (~18 MB) in memory at once


class Housekeeping:
    """The housekeeping thread's work, for `Agent`."""

    def _housekeeping(self: Agent) -> None:
        next_status = next_scan = self.clock.monotonic()
        while not self._stop.is_set():
            now = self.clock.monotonic()
            try:
                self._flush_due(now)
                self._expire(now)
                if self._resend_all.is_set() or now >= next_scan:
                    self._resend(now)
                    next_scan = now + min(1.0, self.config.hub.resend_after_s / 4)
                if self.adapt is not None:
                    self.adapt.tick(now)
                if now >= next_status:
                    self._report_status()
                    next_status = now + self.config.telemetry.status_interval_s
            except Exception:
                log.exception("housekeeping round failed; retrying")
            self._sync_source_stats()
            self._sync_sink_losses()
            with self._changed:
                self._changed.wait(TICK_S)

    def _flush_due(self: Agent, now: float) -> None:
        """Send the batch that is due; with the link unable to take it, its rows (images) are not read: never
        asked, its samples go with the resend scan once the link takes requests again."""
        with self._lock:
            batch = self.batcher.take() if self.batcher.due(now) else None
        if batch is None or not batch.samples or self.transport is None or not self.transport.accepting():
            return
        self._send_rows([r for r in (self.outbox.get(s.sample_id) for s in batch.samples) if r is not None], now)

    def _expire(self: Agent, now: float) -> None:
        """Report `timeout` for samples past patience. The mark is written to the outbox before the samples are
        flagged in memory: a write that fails (file locked, disk full) leaves them unflagged, so the next round
        tries again instead of skipping them for good; and after a crash the reply is `late`, never a second
        final answer."""
        due = self._past_patience(now)
        if not due:
            return
        try:
            self.outbox.mark_timed_out(due)
        except OutboxError as exc:
            self.telemetry.problem("outbox", str(exc))
            raise
        self.telemetry.problem("outbox", "")  # the file works (again)
        for waiting in self._flag_timed_out(due):
            try:
                self.telemetry.inc("timeouts")
                self._emit(timed_out(waiting.result))
            finally:  # a reply taken meanwhile waits for this (`late` follows `timeout`), and so does wait_settled
                with self._changed:
                    waiting.timeout_reported = True
                    self._changed.notify_all()

    def _past_patience(self: Agent, now: float) -> list[str]:
        with self._lock:
            return [sample_id for sample_id, waiting in self._waiting.items()
                    if not waiting.timed_out and now >= waiting.patience_at]

    def _flag_timed_out(self: Agent, sample_ids: list[str]) -> list[Waiting]:
        """Flag the samples still waiting (a reply may have taken one while the mark was written: its fused
        result is final, not a timeout)."""
        expired: list[Waiting] = []
        with self._lock:
            for sample_id in sample_ids:
                waiting = self._waiting.get(sample_id)
                if waiting is not None and not waiting.timed_out:
                    waiting.timed_out = True
                    expired.append(waiting)
        return expired

    def _resend(self: Agent, now: float) -> None:
        """Send outbox rows never sent, or due to be asked again among the RESEND_WINDOW oldest already asked (see
        edge_agent/resend.py), oldest first, until the transport's window is full: a backlog goes out as a bounded
        stream, never all at once. A link that cannot take anything now (the broker away) is not scanned at all:
        the scan and the rows it reads (their images) wait for it, and the reconnect asks for a full scan."""
        if self.transport is None:
            return
        self._resend_all.clear()
        if not self.transport.accepting():
            return
        busy = self.transport.in_flight()
        with self._lock:
            open_batch = self.batcher.current_batch_id()
        due: list[str] = []
        asked = 0
        for sample_id, batch_id in self.outbox.index():
            if sample_id in busy or batch_id == open_batch:
                continue
            if self._asks.asked(sample_id):
                asked += 1
                if asked > RESEND_WINDOW or not self._asks.due(sample_id, now):
                    continue
            due.append(sample_id)
        for start in range(0, len(due), RESEND_CHUNK):
            if not self.transport.accepting():  # the window filled: the rest waits for the next scan
                return
            if not self._send_rows(self.outbox.rows(due[start:start + RESEND_CHUNK]), now):
                return

    def _send_rows(self: Agent, rows: list[OutboxRow], now: float) -> bool:
        """Send `rows` grouped by batch; False as soon as the transport refuses one (its window is full)."""
        if self.transport is None or not rows:
            return True
        by_batch: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_batch.setdefault(row.batch_id, []).append(row)
        for batch_id, group in by_batch.items():
            if not self.transport.send(self._request(batch_id, group, now)):
                return False
            for row in group:
                if self._asks.sent(row.sample_id, now):
                    self.telemetry.inc("sent_samples")
                else:
                    self.telemetry.inc("resent_samples")
        return True

    def _request(self: Agent, batch_id: str, rows: list[OutboxRow], now: float) -> hub_pb2.AnnotationRequest:
        wall = self.clock.time()
        left = min(self._deadline_left(row, now, wall) for row in rows)  # one deadline per request, as the hub reads
        request = hub_pb2.AnnotationRequest(batch_id=batch_id, device_id=self.config.device_id,
                                            samples=[self._sample(row, left) for row in rows],
                                            annotators_wanted=rows[0].m, aggregator=self.config.batching.aggregator)
        request.deadline.FromNanoseconds(int((wall + left) * 1e9))
        request.sent_at.FromNanoseconds(int(wall * 1e9))  # the hub reads the deadline against it
        return request

    @staticmethod
    def _sample(row: OutboxRow, deadline_left: float) -> hub_pb2.Sample:
        """The stored sample; past its hub deadline without its image: nobody will look at it (the hub answers
        with the reply it holds, else EXPIRED, and stores no image), and after days offline the backlog's images
        were uploaded, a gigabyte over a mobile link, only to be expired."""
        sample = hub_pb2.Sample.FromString(row.payload)
        if deadline_left <= 0.0:
            sample.image.ClearField("data")
        return sample

    def _deadline_left(self: Agent, row: OutboxRow, now: float, wall: float) -> float:
        """Seconds left of the row's hub deadline: on the monotonic clock for a sample this run made or restored
        (the wall clock may have jumped since: NTP setting a Pi's 1970 clock at boot, when the hub link comes up),
        else from the stored wall-clock deadline, never more than `deadline_s`."""
        with self._lock:
            waiting = self._waiting.get(row.sample_id)
        if waiting is not None and waiting.deadline_at is not None:
            return max(0.0, waiting.deadline_at - now)
        return left_of(self.config.batching.deadline_s, row.deadline - self.config.batching.deadline_s, wall)

    def _report_status(self: Agent) -> None:
        if self.transport is None:
            return
        model = self.slot.active
        self.transport.report_status(self.telemetry.device_status(self.config.device_id, model.name, model.version))

    def _restore(self: Agent) -> None:
        """After a restart: results settled before the crash reach the sinks that missed them; every stored sample
        waits for its reply again (and is resent on connect), with what is left of its patience. A row that cannot
        be decoded (a damaged card) is dropped and counted, so one bad row does not keep the agent from starting.
        Images are not read (they stay in the outbox until sent): a backlog of thousands restores in the memory of
        its model outputs."""
        recovered = self._recover_settled()
        now, wall = self.clock.monotonic(), self.clock.time()
        restored = 0
        damaged: list[str] = []
        for row in self.outbox.restorable():
            try:
                waiting = self._restored(row, now, wall)
            except (ValueError, TypeError, KeyError, AttributeError):  # what json, numpy and Result raise on bad data
                damaged.append(row.sample_id)
                continue
            with self._lock:
                self._waiting[row.sample_id] = waiting
            if row.timed_out:  # marked, then perhaps killed before the timeout result was written
                self._emit(timed_out(waiting.result), skip_held=True)
            restored += 1
        if damaged:
            self._drop_damaged(damaged)
        if restored or recovered:
            log.info("restored %d unreplied samples and %d settled results from the outbox", restored, recovered)
            self._resend_all.set()

    def _restored(self: Agent, row: StoredSample, now: float, wall: float) -> Waiting:
        """A stored row as the sample waiting for its reply; ValueError, TypeError, KeyError or AttributeError
        when the row is damaged."""
        meta = json.loads(row.meta)
        result = Result.from_dict(meta["result"])
        shape = meta.get("shape", [-1])  # rows written before detection existed: flat logits
        logits = np.frombuffer(row.logits, np.float32).reshape(shape)
        size = FrameSize(*meta.get("size", (0, 0)), tuple(meta.get("placed", WHOLE_INPUT)))  # type: ignore[arg-type]
        batching = self.config.batching  # what is left of patience and deadline; never more (a clock set back)
        return Waiting(result, logits, meta["kind"], FusionParams(meta["temperature"], meta["lambda"]),
                       now + left_of(batching.patience_s, row.created, wall),
                       timed_out=bool(row.timed_out), timeout_reported=bool(row.timed_out), size=size, m=row.m,
                       labels=tuple(meta.get("labels", ())),
                       deadline_at=now + left_of(batching.deadline_s, row.created, wall))

    def _drop_damaged(self: Agent, sample_ids: list[str]) -> None:
        """Damaged rows leave the outbox (kept, they would be resent for ever and their replies be unknown),
        counted in outbox_dropped, logged once and named on status."""
        self.outbox.drop_damaged(sample_ids)
        log.error("%d stored sample(s) in %s could not be decoded (damaged) and were dropped", len(sample_ids),
                  self.outbox.path)
        self._outbox_damaged(f"{len(sample_ids)} damaged stored sample(s) dropped at start-up")

    def _outbox_damaged(self: Agent, text: str) -> None:
        """Damage found in the outbox (a file moved aside, rows dropped) stays on status (`problem.outbox_damaged`)
        for the run: the samples are lost, unlike a write refused now and then (`problem.outbox`)."""
        self.telemetry.problem("outbox_damaged", text)


def left_of(span: float, created: float, wall: float) -> float:
    """What is left of `span` seconds begun at wall time `created`, held to [0, span]: a clock set back or forward
    since cannot stretch it, nor make it negative."""
    return min(span, max(0.0, created + span - wall))


def timed_out(result: Result) -> Result:
    return replace(result, status=ResultStatus.TIMEOUT, detail="no reply within patience; the model's answer stands")
