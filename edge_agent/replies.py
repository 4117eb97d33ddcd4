"""How the agent takes the hub's replies: fuse people's answers into the waiting sample's result (or report a late,
declined or refused one), settle its labour, acknowledge it in the outbox; and the link's state changes.

A mixin of `Agent` (its state: `_lock`, `_waiting`, `_done`, `_asks`, `labour`, `outbox`, `telemetry`, ...), split
out so each file holds one responsibility.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.edge_agent.errors import OutboxError
from hgen.edge_agent.kinds import FrameSize, adapter_for
from hgen.edge_agent.results import Result, ResultStatus, declined_detail
from hgen.edge_agent.transports import ConnectionState, TransportErrorCode
from hgen.protos import hub_pb2
from hgen.runtime.hdnn import FusionParams, get_kind
from hgen.runtime.labour import MAX_OPERATIONS

if TYPE_CHECKING:
    from hgen.edge_agent.agent import Agent

log = logging.getLogger("hgen.edge_agent.agent")

RECENT_REPLIES = 10_000
TIMEOUT_EMIT_WAIT_S = 30.0  # a reply waits at most this long for its sample's `timeout` to reach the sinks
MAX_DRAWN = 100  # boxes or regions one person's answer may charge for: a reply is not signed


@dataclass
class Waiting:
    """An escalated sample waiting for people: enough to fuse and emit its update."""

    result: Result
    logits: np.ndarray  # one sample's raw outputs, without the batch axis (logits, or a detection grid)
    kind: str
    params: FusionParams
    patience_at: float
    timed_out: bool = False
    timeout_reported: bool = False  # its `timeout` result reached the sinks (what `wait_settled` waits for)
    labour: float = 0.0  # the estimate reserved from the labour bucket; a reply settles it
    size: FrameSize = FrameSize(0, 0)  # the frame as sent: people's pixel boxes are relative to it
    m: int = 1  # people asked: bounds the labour a reply may report
    # The class names of the model that made the sample: people answered its classes, whatever runs by the reply
    # (empty for a sample stored before they were kept: the running model's then).
    labels: tuple[str, ...] = ()
    # When the hub's deadline passes, on the monotonic clock: the deadline is sent as what is left of it after the
    # wall clock's `sent_at`, so a clock set by NTP at boot (a Pi has no RTC) does not expire the samples made before.
    deadline_at: float | None = None


def enum_name(enum: Any, value: int) -> str:
    """The name of a wire enum's value, or the number for a value newer than this agent: a newer hub's reason
    must not make the reply untakeable (it would be asked again for ever)."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return f"{value} (unknown to this agent)"


def reported_labour(reply: hub_pb2.SampleReply, waiting: Waiting) -> float:
    """The labour a reply says people spent, held to what its answers can cost: m people at up to MAX_OPERATIONS
    each, or one operation per box or region drawn where answers drew more; a value that is not a number (NaN,
    infinite, negative) settles at the estimate. A reply is not signed: 1e12 used to stop the device asking people
    for good, and NaN made its labour ratio NaN."""
    if not math.isfinite(reply.labour) or reply.labour < 0:
        log.warning("reply for %s reports labour %r: the estimate is kept", reply.sample_id[:64], reply.labour)
        return waiting.labour
    drawn = sum(max(MAX_OPERATIONS, _items(answer)) for answer in reply.answers)
    return min(reply.labour, max(max(1, waiting.m) * MAX_OPERATIONS, drawn))


def _items(answer: hub_pb2.Answer) -> int:
    """Boxes or regions an answer drew (the hub counts one operation each), at most MAX_DRAWN; 1 for a class."""
    label = answer.WhichOneof("label")
    if label == "boxes":
        return min(MAX_DRAWN, len(answer.boxes.boxes))
    if label == "regions":
        return min(MAX_DRAWN, len(answer.regions.regions))
    return 1


def settled_result(sample_id: str, text: str) -> Result | None:
    """A settled result as journalled, or None (logged) when its stored text is damaged."""
    try:
        return Result.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        log.error("the settled result of %s in the outbox is damaged (%s): dropped", sample_id[:64], exc)
        return None


class ReplyHandling:
    """Replies and link state, for `Agent`."""

    def _on_reply(self: Agent, reply: hub_pb2.SampleReply) -> None:
        """Fuse and settle the reply. The sample is taken out of `_waiting` meanwhile (patience and a second copy of
        the reply leave it alone) and put back if its final result cannot be committed (the outbox's file failing:
        OutboxError), so a resend's reply settles it later instead of it being lost until a restart."""
        if self.adapt is not None:  # the hub's queue depth is part of the selector's context
            self.adapt.on_reply(reply)
        with self._lock:
            waiting = self._waiting.pop(reply.sample_id, None)
            duplicate = waiting is None and reply.sample_id in self._done
            if waiting is not None:
                self._done[reply.sample_id] = None
        if waiting is None:
            self._unexpected(reply.sample_id, duplicate)
            return
        if waiting.timed_out:
            self._await_timeout(waiting)
        try:
            result = self._final(waiting, reply)
            journalled = self.outbox.settle(result.sample_id, result.to_json())
        except BaseException:
            with self._lock:
                self._done.pop(reply.sample_id, None)
                self._waiting.setdefault(reply.sample_id, waiting)
            raise
        self._forget(reply, waiting, result)
        self._deliver(result, journalled)
        with self._changed:
            self._changed.notify_all()

    def _await_timeout(self: Agent, waiting: Waiting) -> None:
        """A reply taken while housekeeping is still emitting its sample's `timeout` waits for it: consumers must
        see `timeout` (final) before the `late` that follows it, never the other way round."""
        with self._changed:
            if not self._changed.wait_for(lambda: waiting.timeout_reported or self._stop.is_set(),
                                          TIMEOUT_EMIT_WAIT_S):
                log.warning("the timeout of %s was not emitted within %.0f s; its late reply goes first",
                            waiting.result.sample_id[:64], TIMEOUT_EMIT_WAIT_S)

    def _unexpected(self: Agent, sample_id: str, duplicate: bool) -> None:
        if duplicate:
            self.telemetry.inc("duplicate_replies")
        else:
            self.telemetry.inc("unknown_replies")
            self.telemetry.problem("replies", f"reply for unknown sample {sample_id!r} ignored")

    def _final(self: Agent, waiting: Waiting, reply: hub_pb2.SampleReply) -> Result:
        """The sample's final result: people's answers fused in, or reported late after a patience timeout."""
        if waiting.timed_out:
            return self._late(waiting, reply)
        return self._fused(waiting, reply)

    def _forget(self: Agent, reply: hub_pb2.SampleReply, waiting: Waiting, result: Result) -> None:
        """The result is committed: count it, settle its labour, stop asking about it."""
        self.telemetry.inc("replies")
        if waiting.timed_out:
            self.telemetry.inc("late_replies")
        else:
            self._count_final(result, reply)
        with self._lock:
            self.labour.settle(waiting.labour, reported_labour(reply, waiting))
            while len(self._done) > RECENT_REPLIES:
                self._done.popitem(last=False)
            self._asks.done(reply.sample_id)

    def _deliver(self: Agent, result: Result, journalled: bool) -> None:
        """Emit the committed result; its journal entry goes only once every sink took it (else a restart
        re-offers it to the sinks that lack it, `_recover_settled`)."""
        if not self._emit(result) or not journalled:
            return
        try:
            self.outbox.emitted(result.sample_id)
        except OutboxError as exc:  # delivered: at worst a restart re-offers it to sinks that cannot tell
            self.telemetry.problem("outbox", str(exc))

    def _recover_settled(self: Agent) -> int:
        """After a crash: results settled but perhaps not emitted go to every sink that does not hold them yet."""
        recovered = self.outbox.unemitted()
        for sample_id, text in recovered:
            result = settled_result(sample_id, text)
            if result is None:  # damaged: it cannot be emitted, and must not stop the start
                self._outbox_damaged(f"the settled result of {sample_id[:64]} could not be decoded and was dropped")
                self.outbox.emitted(sample_id)
            elif self._emit(result, skip_held=True):
                self.outbox.emitted(sample_id)
            with self._lock:
                self._done[sample_id] = None  # its reply may come again: a duplicate, not an unknown sample
        return len(recovered)

    def _fused(self: Agent, waiting: Waiting, reply: hub_pb2.SampleReply) -> Result:
        """People's labels fused into the model's; without any (declined, expired, rejected) the model's stands."""
        result = replace(waiting.result, cant_tell=reply.cant_tell, skipped=reply.skipped)
        adapter = adapter_for(waiting.kind)
        answers = adapter.fuse_answers(reply, waiting.logits, waiting.size)
        if answers is not None:
            fused = get_kind(waiting.kind).fuse(waiting.logits[None], answers, waiting.params)[0]
            fields = adapter.fused_fields(fused, answers, self._labels_of(waiting), waiting.size)
            return replace(result, status=ResultStatus.FUSED, **fields)
        if reply.status == hub_pb2.REPLY_STATUS_EXPIRED and (reply.cant_tell or reply.skipped):
            return replace(result, status=ResultStatus.DECLINED, detail=declined_detail(reply.cant_tell, reply.skipped))
        reason = enum_name(hub_pb2.ReplyStatus, reply.status)
        if reply.status == hub_pb2.REPLY_STATUS_REJECTED:
            reason = f"{reason} {enum_name(hub_pb2.RejectReason, reply.reject_reason)}: {reply.detail}"
        return replace(result, status=ResultStatus.HUB_REFUSED, detail=reason)

    def _labels_of(self: Agent, waiting: Waiting) -> tuple[str, ...]:
        return waiting.labels or self.slot.active.manifest.labels

    def _count_final(self: Agent, result: Result, reply: hub_pb2.SampleReply) -> None:
        """Counted once the result is committed (a reply that failed to settle is taken again later)."""
        if result.status is ResultStatus.FUSED:
            self.telemetry.inc("fused")
            if self.prior is not None:
                self.prior.trust(result.label)
        elif result.status is ResultStatus.DECLINED:
            self.telemetry.inc("declined")
        elif result.status is ResultStatus.HUB_REFUSED:
            self.telemetry.inc("hub_refused")
            if reply.status == hub_pb2.REPLY_STATUS_REJECTED:
                self.telemetry.problem("hub_refused", result.detail)

    def _late(self: Agent, waiting: Waiting, reply: hub_pb2.SampleReply) -> Result:
        """A reply after patience: the `timeout` result was final, so the label stays; the answers are reported."""
        people = adapter_for(waiting.kind).late_fields(reply, waiting.logits, waiting.size, self._labels_of(waiting))
        status = enum_name(hub_pb2.ReplyStatus, reply.status)
        if reply.status == hub_pb2.REPLY_STATUS_REJECTED:
            status = f"{status} {enum_name(hub_pb2.RejectReason, reply.reject_reason)}"
        return replace(waiting.result, status=ResultStatus.LATE, cant_tell=reply.cant_tell, skipped=reply.skipped,
                       detail=f"{status} after patience; the model's answer stands", **people)

    def _on_transport_state(self: Agent, state: ConnectionState, error: TransportErrorCode, detail: str) -> None:
        if state is ConnectionState.CONNECTED:
            self.telemetry.problem("hub", "")
            self._asks.reconnected(self.clock.monotonic())
            self._resend_all.set()
        elif error is not TransportErrorCode.OK:
            self.telemetry.problem("hub", f"{error.value}: {detail}")
        with self._changed:  # waiters on the link's health (tests, wait_outbox_empty) re-check
            self._changed.notify_all()
