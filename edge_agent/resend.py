"""When to ask the hub again about a sample still without a reply.

The outbox is the guarantee, asking again is how it is kept: a broker killed before persisting, or a hub
redeployed, may have lost a sample or its reply, and only the device knows it is still waiting. Each ask
costs the hub a duplicate it answers from its knowledge base (and, if the reply was only late, one duplicate
reply, and the broker a message to store and forward), so asks back off: `after_s`, then x2 per unanswered ask
up to `after_s * MAX_FACTOR`. A reconnect resets the back-off but never asks sooner than `after_s` after the
last ask: a broker crashing every few seconds must not turn every waiting sample into a flood of asks. The cap
is high (5 s -> 320 s at the default) because what loses a message in flight also breaks the link, and the
reconnect brings the back-off down again; a long silence without a reconnect is a hub that is away or busy,
where over MQTT every re-ask only queues at the broker as one more duplicate for the hub to answer (with a cap
of 8x, a 30-minute outage and its drain queued about one re-ask per sample, which doubled the hub's work).

Asking again is also bounded in breadth: only the `RESEND_WINDOW` oldest samples already asked once are asked
again (first asks always go). Over MQTT the broker queues asks for a hub that is down; without the window, a
30-minute outage at 60 fps queued about a million re-asks (27,000 samples, each every 5-40 s), which the hub
then had to answer one by one. If the hub does not answer the oldest samples, asking about newer ones cannot help;
once it does, the window slides to the next ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

MAX_FACTOR = 64
RECONNECT_GRACE_S = 1.0
RESEND_WINDOW = 256  # samples asked again at most, the oldest first


@dataclass
class _Ask:
    last: float
    due: float
    asks: int


class ResendSchedule:
    """Thread-safe; samples never sent have no entry and are always due."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._asks: dict[str, _Ask] = {}
        self._lock = threading.Lock()

    def sent(self, sample_id: str, now: float) -> bool:
        """Record an ask; True on the first one."""
        with self._lock:
            ask = self._asks.get(sample_id)
            asks = 1 if ask is None else ask.asks + 1
            self._asks[sample_id] = _Ask(now, now + self.after_s * min(2 ** (asks - 1), MAX_FACTOR), asks)
            return ask is None

    def due(self, sample_id: str, now: float) -> bool:
        with self._lock:
            ask = self._asks.get(sample_id)
            return ask is None or now >= ask.due

    def asked(self, sample_id: str) -> bool:
        """Asked at least once since the agent started."""
        with self._lock:
            return sample_id in self._asks

    def done(self, sample_id: str) -> None:
        with self._lock:
            self._asks.pop(sample_id, None)

    def reconnected(self, now: float) -> None:
        """The link is back: a long back-off (hours offline) shrinks to `after_s` from the last ask, so whatever
        the outage lost is asked for soon; never sooner, so a flapping link does not multiply the asks; and not
        before a short grace, in which replies the broker kept for the device arrive and settle their samples."""
        grace = now + min(self.after_s, RECONNECT_GRACE_S)
        with self._lock:
            for ask in self._asks.values():
                ask.due, ask.asks = max(grace, min(ask.due, ask.last + self.after_s)), 0

    def asks(self, sample_id: str) -> int:
        with self._lock:
            ask = self._asks.get(sample_id)
            return 0 if ask is None else ask.asks
