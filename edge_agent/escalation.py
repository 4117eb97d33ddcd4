"""How the agent hands a doubted frame to people: reserve its labour, pool it into the current batch, commit it to
the outbox (the sample survives a crash from here on), then emit its PENDING result.

A mixin of `Agent` (its state: `_lock`, `_waiting`, `labour`, `batcher`, `outbox`, `telemetry`, ...), split out so
each file holds one responsibility, as `replies.py` is for what comes back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from hgen.edge_agent.errors import OutboxError
from hgen.edge_agent.gating import Decision, PendingSample
from hgen.edge_agent.kinds import FrameSize
from hgen.edge_agent.model import FrameShapeError, Model
from hgen.edge_agent.outbox import OutboxRow, Stored
from hgen.edge_agent.replies import RECENT_REPLIES, Waiting
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sources import Frame
from hgen.protos import hub_pb2
from hgen.protos.kinds import wire_kind
from hgen.runtime.preprocess import eight_bits

if TYPE_CHECKING:
    from hgen.edge_agent.agent import Agent


class Escalation:
    """`Agent._escalate` and what it needs."""

    def _escalate(self: Agent, frame: Frame, model: Model, logits: np.ndarray, size: FrameSize, result: Result,
                  labour: float, decision: Decision, now: float) -> Result | None:
        """Pool the sample (labour budget permitting), commit it to the outbox, then emit PENDING. The frame is
        encoded only once its labour is reserved: a field over its labour limit refuses most doubted frames, and
        encoding a camera frame costs milliseconds on a Pi."""
        with self._lock:
            reserved = self.labour.reserve(labour, model.m)
            if not self.labour.take(reserved):
                self.telemetry.inc("labour_exhausted")
                return None
        try:
            sample = sample_proto(frame, model, logits, result, self.config.device_id,
                                  self.config.batching.image_format)
        except BaseException:
            with self._lock:
                self.labour.refund(reserved)
            raise
        with self._lock:
            if not self.batcher.offer(PendingSample(result.sample_id, b"", labour), now):
                self.labour.refund(reserved)
                self.telemetry.inc("budget_exhausted")
                return None
            batch_id = self.batcher.current_batch_id()
        pending = replace(result, status=ResultStatus.PENDING)
        deadline = self.clock.time() + self.config.batching.deadline_s
        meta = {"result": pending.to_dict(), "kind": model.manifest.kind, "temperature": model.params.temperature,
                "lambda": model.params.fusion_lambda, "shape": list(logits.shape[1:]),
                "size": [size.width, size.height], "placed": list(size.placed), "labels": list(model.manifest.labels)}
        row = OutboxRow(result.sample_id, batch_id, self.clock.time(), frame.index, model.m, deadline,
                        sample.SerializeToString(), logits.astype(np.float32).tobytes(), json.dumps(meta))
        if not self._stored(row):
            with self._lock:
                self.labour.refund(reserved)
            return None
        self.telemetry.inc("audits" if decision is Decision.AUDIT else "escalated")
        with self._lock:
            self._waiting[result.sample_id] = Waiting(pending, logits[0].copy(), model.manifest.kind, model.params,
                                                      now + self.config.batching.patience_s,
                                                      labour=reserved, size=size, m=model.m,
                                                      labels=model.manifest.labels,
                                                      deadline_at=now + self.config.batching.deadline_s)
        self._emit(pending)
        return pending

    def _stored(self: Agent, row: OutboxRow) -> bool:
        """Commit the sample; one refused (overflow policy) or not written (disk full, file locked: problem.outbox
        says why) counts as dropped and the model's answer stands, and the stream goes on. Older samples the
        outbox dropped to make room for it are forgotten (`_forget_dropped`)."""
        try:
            put = self.outbox.put([row])
            self.telemetry.problem("outbox", "")  # the file works (again)
        except OutboxError as exc:
            self.telemetry.problem("outbox", str(exc))
            put = Stored(())
        self._forget_dropped(put.dropped)
        stored = row.sample_id in put.stored
        if not stored:
            self.telemetry.inc("outbox_dropped")
        return stored

    def _forget_dropped(self: Agent, sample_ids: Sequence[str]) -> None:
        """Samples the outbox dropped for room get no reply the agent could settle: kept waiting, they held their
        memory, a place in `waiting_for_people` and their labour for the whole run. Their labour is refunded as
        for a reply nobody answered (expired, refused), they are asked about no more, a reply still on its way
        counts as a duplicate, and one whose patience has not run out gets its final result now, as patience
        would have given it: the model's answer stands (`timeout`, saying why)."""
        final: list[Result] = []
        with self._lock:
            for sample_id in sample_ids:
                self._asks.done(sample_id)
                waiting = self._waiting.pop(sample_id, None)
                if waiting is None:
                    continue
                self.labour.settle(waiting.labour, 0.0)
                self._done[sample_id] = None
                if not waiting.timed_out:  # else housekeeping reports (or reported) its timeout
                    final.append(dropped(waiting.result))
            while len(self._done) > RECENT_REPLIES:
                self._done.popitem(last=False)
        for result in final:
            self._emit(result)


def dropped(result: Result) -> Result:
    return replace(result, status=ResultStatus.TIMEOUT,
                   detail="dropped from the full outbox before people replied; the model's answer stands")


def sample_proto(frame: Frame, model: Model, logits: np.ndarray, result: Result, device_id: str,
                 image_format: str) -> hub_pb2.Sample:
    """What the hub gets of one escalated frame: the image people see (PNG or JPEG) and the model's output."""
    import cv2

    assert frame.image is not None
    pixels = eight_bits(frame.image)  # people see the 8 bits the model saw (a 16-bit PNG or TIFF frame)
    extension = ".png" if image_format == "png" else ".jpg"
    ok, encoded = cv2.imencode(extension, pixels)
    if not ok:
        raise FrameShapeError("frame could not be encoded for people")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    image = hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG if extension == ".png" else hub_pb2.IMAGE_FORMAT_JPEG,
                          data=encoded.tobytes(), height=height, width=width, channels=channels)
    output = model.adapter.model_output(model, logits, result)
    output.confidence = float(result.confidence or 0.0)
    output.kind = wire_kind(model.manifest.kind)
    sample = hub_pb2.Sample(sample_id=result.sample_id, device_id=device_id, bundle_name=model.name,
                            bundle_version=model.version, image=image, output=output)
    sample.captured_at.FromNanoseconds(int(frame.captured_at * 1e9))
    return sample
