"""The agent's side of AdaSpring: reads the context, runs the selector every `interval_s` on the housekeeping thread
and applies its decision through the hot-swap path (verify, health check, stage, switch between two frames).

Context: battery and charging (`adapt.power`), inference latency against a calm reference of the running variant
(the load a CPU hog adds: measured p50 / the lowest p50 seen on that variant), free memory (MemAvailable), the hub
(connected, and the median reply latency of recent samples), and the labour left (the demand's share while the
running total L is within it, none while it is over). With the hub away the offline policy applies:
`stop_escalating` allows no labour (tau 0) and no audits, so the outbox stays bounded; `keep_escalating` keeps
queueing. The choice, its reason and the context are on status (gauges `adapt.*`, `problems["adapt"]` while
something is wrong) and in the log. The hub's queue depth (`SampleReply.queue_depth`, the latest reply's) above
`max_hub_queue` allows no labour either: people are backed up and more samples would only wait.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hgen.edge_agent.adapt.power import open_power
from hgen.edge_agent.adapt.selector import Decision, Selector
from hgen.edge_agent.config import AdaptConfig
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.transports import ConnectionState
from hgen.protos import hub_pb2
from hgen.runtime.bundle.variants import VariantSet, open_variant_set
from hgen.runtime.variants import Context

if TYPE_CHECKING:
    from hgen.edge_agent.agent import Agent
    from hgen.edge_agent.model import Model

log = logging.getLogger(__name__)
REPLY_WINDOW = 50
ANSWERED = {ResultStatus.FUSED, ResultStatus.DECLINED, ResultStatus.HUB_REFUSED, ResultStatus.LATE}


def free_memory_mb(meminfo: Path) -> float | None:
    """MemAvailable in MB, or None where /proc/meminfo is not there."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


class Adaptation:
    """One per agent with `adapt.variants` set; `tick(now)` from housekeeping, `on_result` as a result sink."""

    def __init__(self, agent: Agent, config: AdaptConfig) -> None:
        assert config.variants is not None
        bundle = agent.config.bundle
        self.agent, self.config = agent, config
        self._members: dict[str, int | None] = {}  # model path -> member index (None: not in the set)
        self.set: VariantSet = open_variant_set(config.variants, bundle.public_key, Path(bundle.store_dir) / "variants",
                                                bundle.expected_target)
        self.selector = Selector(self.set.specs, self.set.index.budgets(), config, self._member(agent.model))
        self.power = open_power(config.power)
        self.last: Decision | None = None
        self.context: Context | None = None
        self.offline = False
        self._next = 0.0
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._reply_s: deque[float] = deque(maxlen=REPLY_WINDOW)
        self.hub_queue = 0
        self._calm_ms: dict[int, float] = {}
        self._swapping = threading.Lock()
        self.worker: threading.Thread | None = None  # the last swap's loader thread (tests join it)
        self._audit_share = agent.gate.config.audit_share
        for name, read in {
            "adapt.variant": lambda: -1 if self.selector.running is None else self.selector.running[0],
            "adapt.level": lambda: -1 if self.selector.running is None else self.selector.running[1],
            "adapt.tau": lambda: self.agent.model.tau,
            "adapt.switches": lambda: self.selector.switches,
            "adapt.select_ms": lambda: self.last.select_ms if self.last else 0.0,
            "adapt.score": lambda: self.last.score if self.last and math.isfinite(self.last.score) else 0.0,
            "adapt.battery": lambda: -1.0 if self.context is None or self.context.battery is None
            else self.context.battery,
            "adapt.load": lambda: self.context.load if self.context else 1.0,
            "adapt.offline": lambda: float(self.offline),
            "adapt.reply_s_p50": lambda: self.reply_latency() or 0.0,
            "adapt.hub_queue": lambda: self.hub_queue,
            "adapt.lambda2": lambda: self.last.choice.lambda2 if self.last and self.last.choice else 0.0,
        }.items():
            agent.telemetry.gauge(name, read)
        for constraint in ("latency", "storage", "memory", "labour"):  # why: options each constraint ruled out
            agent.telemetry.gauge(f"adapt.dropped_{constraint}", self._dropped(constraint))
        for demand in ("accuracy", "energy"):  # why: a soft demand the choice misses (1) or meets (0)
            agent.telemetry.gauge(f"adapt.misses_{demand}", self._misses(demand))

    def _dropped(self, constraint: str) -> Callable[[], float]:
        return lambda: float(self.last.choice.dropped.get(constraint, 0)) if self.last and self.last.choice else 0.0

    def _misses(self, demand: str) -> Callable[[], float]:
        return lambda: float(demand in self.last.choice.misses) if self.last and self.last.choice else 0.0

    # --- context ---------------------------------------------------------------------------------------

    def _member(self, model: Model) -> tuple[int, int] | None:
        """The running (variant, level): the member the model was loaded from (its archive's SHA-256 against the
        signed index, so a copy elsewhere counts too), and the level whose tau is closest to the model's."""
        index = self._member_of(Path(model.path))
        if index is None:
            return None
        taus = np.array([lv.tau for lv in self.set.index.variants[index].levels])
        return index, int(np.argmin(np.abs(taus - model.tau)))

    def _member_of(self, path: Path) -> int | None:
        key = str(path.resolve())
        if key not in self._members:
            self._members[key] = None
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                self._members[key] = next((i for i, e in enumerate(self.set.index.variants) if e.sha256 == digest),
                                          None)
        return self._members[key]

    def on_result(self, result: Result) -> None:
        """A result sink: times from `pending` to the reply give the hub's reply latency."""
        with self._lock:
            if result.status is ResultStatus.PENDING:
                self._pending[result.sample_id] = self.agent.clock.monotonic()
            elif result.status in ANSWERED and result.sample_id in self._pending:
                self._reply_s.append(self.agent.clock.monotonic() - self._pending.pop(result.sample_id))
            elif result.status is ResultStatus.TIMEOUT:
                self._pending.pop(result.sample_id, None)

    def on_reply(self, reply: hub_pb2.SampleReply) -> None:
        """Called by the agent for every reply: the hub's queue depth when it was made."""
        self.hub_queue = int(reply.queue_depth)

    def reply_latency(self) -> float | None:
        with self._lock:
            return float(np.median(self._reply_s)) if self._reply_s else None

    def _load(self) -> float:
        """Measured p50 of the running variant against the calmest p50 seen on it (1.0 until it has run)."""
        running = self.selector.running
        p50 = self.agent.telemetry.snapshot()["inference_ms_p50"]
        if running is None or p50 <= 0:
            return 1.0
        calm = min(self._calm_ms.get(running[0], p50), p50)
        self._calm_ms[running[0]] = calm
        return p50 / calm if calm > 0 else 1.0

    def read_context(self, now: float) -> Context:
        transport = self.agent.transport
        reply = self.reply_latency()
        away = (transport is None or transport.state is not ConnectionState.CONNECTED
                or (reply is not None and reply > self.config.max_reply_latency_s))
        self.offline = away
        share = self.agent.config.batching.labour_share
        backed_up = self.config.max_hub_queue is not None and self.hub_queue > self.config.max_hub_queue
        labour = (0.0 if (away and self.config.offline == "stop_escalating") or backed_up
                  else math.inf if share is None
                  else share if self.agent.labour.ratio() <= share else 0.0)  # over budget: nothing left for now
        power = self.power.read(now)
        return Context(battery=power.battery, charging=power.charging, load=self._load(),
                       free_memory_mb=free_memory_mb(self.config.meminfo), labour_allowed=labour)

    # --- decisions -------------------------------------------------------------------------------------

    def tick(self, now: float) -> Decision | None:
        """Select (at most every interval_s) and apply; returns the decision taken now, if any."""
        if now < self._next:
            return None
        self._next = now + self.config.interval_s
        active = self._member(self.agent.model)
        if active is None and self.selector.running is not None and not self._swapping.locked():
            self.agent.telemetry.problem("adapt", f"running {self.agent.model.version} is not in the variant set "
                                                  "(a hub update?): selection paused")
            return None
        self.context = self.read_context(now)
        decision = self.last = self.selector.decide(self.context, now)
        self._offline_audits()
        if decision.switch:
            log.info("adapt: %s", decision.reason)
            self._apply(decision)
        return decision

    def _offline_audits(self) -> None:
        share = 0.0 if self.offline and self.config.offline == "stop_escalating" else self._audit_share
        if self.agent.gate.config.audit_share != share:
            self.agent.gate.config = self.agent.gate.config.model_copy(update={"audit_share": share})

    def _apply(self, decision: Decision) -> None:
        model = self.agent.model
        active = self._member(model)
        if active is not None and active[0] == decision.variant:
            model.tau = decision.tau  # same variant, another labour level: no swap
            return
        self.worker = threading.Thread(target=self._swap, args=(decision,), name="agent-adapt-swap", daemon=True)
        self.worker.start()

    def _swap(self, decision: Decision) -> None:
        """Load, verify and health-check the member, stage it; the pipeline switches between two frames."""
        with self._swapping:
            try:
                self.agent.swap_to(self.set.path(decision.variant), tau=decision.tau)
                self.agent.telemetry.problem("adapt", "")
            except Exception as exc:  # a member that fails its check: keep running, say why, retry later
                log.error("adapt: switching to %s failed: %s", self.set.index.variants[decision.variant].name, exc)
                self.agent.telemetry.problem("adapt", f"switch to {self.set.index.variants[decision.variant].name} "
                                                      f"failed: {exc}")
                self.selector.running = self._member(self.agent.model)
