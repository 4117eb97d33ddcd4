"""Who goes to people: the confidence gate, the audit draw, the escalation rate limit and the labour budget.

Pool-based batching as in the paper: escalated samples collect in a pool that is sent when it holds
`size` samples or its oldest sample waited `max_wait_s`. Each batch may spend at most L_c = `labour_budget`
operations (sum of L0 = d * m, Eq. 3); a sample that does not fit keeps the model's answer and is counted.
"""

from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass, field

import numpy as np

from hgen.edge_agent.config import BatchingConfig, GateConfig
from hgen.runtime.hdnn import needs_human
from hgen.runtime.labour import MAX_OPERATIONS, MAX_PARTICIPANTS, labour_per_sample, operations_per_frame


class Decision(enum.Enum):
    """Why a frame's sample does or does not go to people."""

    CONFIDENT = "confident"  # c >= tau, model answer
    ESCALATE = "escalate"  # c < tau, sent to people
    AUDIT = "audit"  # confident, but drawn for a random audit
    RATE_LIMITED = "rate_limited"  # would escalate, but too soon after the previous escalation
    BUDGET = "budget"  # would escalate, but the batch's labour budget is spent

    @property
    def to_people(self) -> bool:
        return self in (Decision.ESCALATE, Decision.AUDIT)


class Gate:
    """Decides per sample; not thread-safe (the pipeline thread owns it)."""

    def __init__(self, config: GateConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._last_escalation: float | None = None

    def decide(self, confidence: float, tau: float, now: float, unfamiliar: bool = False) -> Decision:
        """The runtime's gate (`needs_human`: c < tau), so device, compiler and hub draw the same line. A confident
        frame unlike the training images (`hgen.runtime.familiarity`) is escalated when drawn at
        `unfamiliar_share`, a confident familiar one is audited when drawn at `audit_share`: one draw each, and
        only when the share is on, so the phone's port draws the same sequence."""
        if bool(needs_human(np.float64(confidence), tau)):
            return self._limited(Decision.ESCALATE, now)
        if unfamiliar:
            return self._limited(Decision.ESCALATE, now) if self._drawn(self.config.unfamiliar_share) \
                else Decision.CONFIDENT
        return self._limited(Decision.AUDIT, now) if self._drawn(self.config.audit_share) else Decision.CONFIDENT

    def _drawn(self, share: float) -> bool:
        return bool(share) and self._rng.random() < share

    def _limited(self, decision: Decision, now: float) -> Decision:
        interval = self.config.min_escalation_interval_s
        if interval and self._last_escalation is not None and now - self._last_escalation < interval:
            return Decision.RATE_LIMITED
        self._last_escalation = now
        return decision


@dataclass
class PendingSample:
    """A sample waiting in the pool: its id, the serialised hub_pb2.Sample, and its labour L0."""

    sample_id: str
    payload: bytes
    labour: float


@dataclass
class Batch:
    batch_id: str
    opened_at: float
    samples: list[PendingSample] = field(default_factory=list)
    labour: float = 0.0


class Batcher:
    """The pool: `offer` a sample (False when the budget is spent); `due` tells when to flush."""

    def __init__(self, config: BatchingConfig) -> None:
        self.config = config
        self._batch: Batch | None = None

    def labour_of(self, difficulty: float, m: int) -> float:
        return float(labour_per_sample(float(difficulty), m))

    def offer(self, sample: PendingSample, now: float) -> bool:
        """Add to the current batch unless L_c would be exceeded (the model answer then stands)."""
        batch = self._batch or Batch(str(uuid.uuid4()), now)
        budget = self.config.labour_budget
        if budget is not None and batch.labour + sample.labour > budget + 1e-9:
            return False
        batch.samples.append(sample)
        batch.labour += sample.labour
        self._batch = batch
        return True

    def due(self, now: float) -> bool:
        batch = self._batch
        return batch is not None and (len(batch.samples) >= self.config.size
                                      or now - batch.opened_at >= self.config.max_wait_s)

    def next_deadline(self) -> float | None:
        return None if self._batch is None else self._batch.opened_at + self.config.max_wait_s

    def current_batch_id(self) -> str | None:
        return None if self._batch is None else self._batch.batch_id

    def take(self) -> Batch | None:
        batch, self._batch = self._batch, None
        return batch


SCALE_STEP = 0.05  # how far one reply moves the labour bucket's scale: about the last 20 replies count


class LabourBucket:
    """The compile's labour demand L (Eq. 13) enforced on the device, across batches.

    Each frame adds L x L_max-per-frame operations (capped at `window_frames` of refill); sending a sample takes
    the most it can cost (`reserve`: m x MAX_OPERATIONS for a class answer, or its estimated L0 = d * m scaled by
    how far people's real labour has run above the estimates, if higher: boxes); a reply refunds what people did
    not spend. Starting empty keeps the running total <= L x L_max from the first frame on, and a class answer's
    reply can only refund, however late it comes: reserving the estimate, samples sent before the replies taught
    the scale were charged their excess after the frames that could repay it (a loaded machine's demo ended at
    0.0577 for 0.05). Boxes (one operation each) can still cost more than reserved until replies teach the scale.
    """

    def __init__(self, share: float | None, window_frames: int) -> None:
        self.rate = None if share is None else operations_per_frame(share)
        self.capacity = None if self.rate is None else self.rate * window_frames
        self.tokens = 0.0
        self.spent = 0.0
        self.frames = 0
        self.scale = 1.0  # real labour / reserved, learned from replies; in [1, MAX_OPERATIONS]

    def frame(self) -> None:
        self.frames += 1
        if self.rate is not None and self.capacity is not None:
            self.tokens = min(self.capacity, self.tokens + self.rate)

    def reserve(self, estimate: float, m: int) -> float:
        """What to take for a sample whose L0 estimate is `estimate`, asked of `m` people: at least the most a
        class answer can cost (m x MAX_OPERATIONS), so people's real labour, charged when the reply comes, never
        exceeds what was taken (a reply refunds the rest); more where the estimate, scaled by how far real labour
        ran above the estimates so far, is higher (boxes drawn)."""
        return max(estimate * self.scale, max(1, m) * MAX_OPERATIONS)

    def take(self, labour: float) -> bool:
        """Reserve `labour` operations for one sample; False (the model's answer stands) when not enough is left."""
        if self.rate is not None and labour > self.tokens + 1e-9:
            return False
        self.tokens -= labour
        self.spent += labour
        return True

    def refund(self, labour: float) -> None:
        """A reserved sample was not sent after all (the batch's L_c or the outbox refused it)."""
        self._give_back(labour)
        self.spent -= labour

    def _give_back(self, labour: float) -> None:
        """Tokens back, never past the window's capacity: the frames refilled the bucket while samples waited, so
        after a hub outage every waiting sample's refund (all EXPIRED) lifted it to 100x its capacity and switched
        the labour limit off for a long burst. What is cut was never spent, so the running total still holds."""
        self.tokens += labour
        if self.capacity is not None:
            self.tokens = min(self.capacity, self.tokens)

    def settle(self, reserved: float, actual: float) -> None:
        """A reply reports what people spent (held by `reported_labour`): charge (or refund) the difference to what
        was reserved, and move the scale a step towards the ratio (replies nobody answered say nothing of it)."""
        self._give_back(reserved - actual)
        self.spent += actual - reserved
        if actual > 0 and reserved > 0:
            step = self.scale * SCALE_STEP * (actual / reserved - 1.0)
            self.scale = min(MAX_OPERATIONS, max(1.0, self.scale + step))

    def ratio(self) -> float:
        """L so far: spent / (frames x participants x operations)."""
        return self.spent / max(1, self.frames) / (MAX_PARTICIPANTS * MAX_OPERATIONS)

