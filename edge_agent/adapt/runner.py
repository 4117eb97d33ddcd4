"""The agent's side of AdaSpring: reads the context, runs the selector every `interval_s` on the housekeeping thread
and applies its decision through the hot-swap path (verify, health check, stage, switch between two frames).

Context: battery and charging (`adapt.power`), the device's load (measured inference p50 / the running variant's
predicted latency: one estimate for the device, kept across swaps and updated only once the p50 window holds
mostly the running variant's frames), free memory (MemAvailable), the hub (connected, and the median reply latency
of recent samples; a sample that timed out counts as answered after patience_s), and the labour left (the
demand's share while the running total L is within it, none while it is over). With the hub away the offline
policy applies: `stop_escalating` allows no labour (tau 0) and no audits, so the outbox stays bounded;
`keep_escalating` keeps queueing. The hub's queue depth (`SampleReply.queue_depth`, the latest reply's) above
`max_hub_queue` allows no labour either: people are backed up and more samples would only wait. Reply latencies and
the queue depth older than STALE_AFTER x max_reply_latency_s are forgotten, and so are they on a reconnect: with no
labour allowed no new replies come, and a stale number would hold the device offline for good.

No selection while a variant swap is loading or a bundle is staged (it runs at the next frame), nor while the
running model is outside the set and is not the configured `bundle.path` (a hub update, also after a restart, when
the agent resumes it from the bundle store): the update stays, the offline and labour policy still apply to it (tau
0 while no labour is allowed, its own tau otherwise). A device running its `bundle.path` bundle that is not a member
(flashed standalone, or rolled back to it) adopts a member at the next selection. What runs is read back from the
active model every tick, so a rollback or a failed swap is followed. The choice, its reason and the
context are on status (gauges `adapt.*`, `problems["adapt"]` while something is wrong) and in the log.
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

from hgen.edge_agent.adapt.members import set_manifests
from hgen.edge_agent.adapt.power import open_power
from hgen.edge_agent.adapt.selector import Decision, Selector
from hgen.edge_agent.config import AdaptConfig
from hgen.runtime.memory import free_memory_mb
from hgen.edge_agent.errors import StagedPendingError
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
STALE_AFTER = 10  # reply latencies and the hub's queue depth count for this many x max_reply_latency_s
ANSWERED = {ResultStatus.FUSED, ResultStatus.DECLINED, ResultStatus.HUB_REFUSED, ResultStatus.LATE}


class Adaptation:
    """One per agent with `adapt.variants` set; `tick(now)` from housekeeping, `on_result` as a result sink."""

    def __init__(self, agent: Agent, config: AdaptConfig) -> None:
        assert config.variants is not None
        bundle = agent.config.bundle
        self.agent, self.config = agent, config
        self._members: dict[str, int | None] = {}  # model path -> member index (None: not in the set)
        self._flashed = Path(bundle.path).resolve()  # the configured bundle: outside the set, a member is adopted
        self.set: VariantSet = open_variant_set(config.variants, bundle.public_key, Path(bundle.store_dir) / "variants",
                                                bundle.expected_target)
        self.manifests = set_manifests(self.set, bundle.public_key)  # one model, or AgentConfigError
        self.selector = Selector(self.set.specs, self.set.index.budgets(), config, self._member(agent.model))
        self.power = open_power(config.power)
        self.last: Decision | None = None
        self.context: Context | None = None
        self.offline = False
        self._next = 0.0
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._reply_s: deque[tuple[float, float]] = deque(maxlen=REPLY_WINDOW)  # (when, latency s)
        self.hub_queue = 0
        self._queue_at = -math.inf
        self._connected: bool | None = None  # at the last tick (None: not looked yet)
        self._load = 1.0  # the device-wide load estimate, kept across swaps
        self._load_since: tuple[Model, int] = (agent.model, 0)  # the model the p50 is of, frames count when it began
        self._paused_tau: tuple[Model, float] | None = None  # while paused: the model outside the set, its own tau
        self.worker: threading.Thread | None = None  # the last swap's loader thread (tests join it)
        self._audit_share = agent.gate.config.audit_share
        for name, read in {
            "adapt.variant": lambda: self._running_gauge(0),
            "adapt.level": lambda: self._running_gauge(1),
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

    def _running_gauge(self, part: int) -> float:
        """What the active model is (not what was last decided: a swap may still be loading); -1 outside the set."""
        member = self._member(self.agent.model)
        return -1.0 if member is None else float(member[part])

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
        """A result sink: times from `pending` to the reply give the hub's reply latency. A timeout counts as a
        reply after (at least) patience_s: a hub that is connected but never answers is as away as a slow one."""
        with self._lock:
            now = self.agent.clock.monotonic()
            if result.status is ResultStatus.PENDING:
                self._pending[result.sample_id] = now
            elif result.status in ANSWERED and result.sample_id in self._pending:
                self._reply_s.append((now, now - self._pending.pop(result.sample_id)))
            elif result.status is ResultStatus.TIMEOUT and result.sample_id in self._pending:
                waited = now - self._pending.pop(result.sample_id)
                self._reply_s.append((now, max(waited, self.agent.config.batching.patience_s)))

    def on_reply(self, reply: hub_pb2.SampleReply) -> None:
        """Called by the agent for every reply: the hub's queue depth when it was made."""
        with self._lock:
            self.hub_queue, self._queue_at = int(reply.queue_depth), self.agent.clock.monotonic()

    def reply_latency(self) -> float | None:
        with self._lock:
            return float(np.median([s for _, s in self._reply_s])) if self._reply_s else None

    def _forget_stale(self, now: float, reconnected: bool) -> None:
        """Drop reply latencies and the queue depth older than STALE_AFTER x max_reply_latency_s (all of them on a
        reconnect): only replies refresh them, and none come while they stop escalation."""
        oldest = math.inf if reconnected else now - STALE_AFTER * self.config.max_reply_latency_s
        with self._lock:
            while self._reply_s and self._reply_s[0][0] < oldest:
                self._reply_s.popleft()
            if self._queue_at < oldest:
                self.hub_queue, self._queue_at = 0, -math.inf

    def _hub_away(self, now: float) -> bool:
        transport = self.agent.transport
        connected = transport is not None and transport.state is ConnectionState.CONNECTED
        self._forget_stale(now, reconnected=connected and self._connected is False)
        self._connected = connected
        reply = self.reply_latency()
        return not connected or (reply is not None and reply > self.config.max_reply_latency_s)

    def _device_load(self) -> float:
        """Measured p50 / the running variant's predicted latency, once the p50 window holds mostly frames of the
        running model; until then (and outside the set) the last estimate. One estimate for the device: a calm
        reference per variant, taken after a swap under a CPU hog, read the hog as calm and flapped."""
        model, snapshot = self.agent.model, self.agent.telemetry.snapshot()
        frames = int(snapshot["frames"])
        if self._load_since[0] is not model:
            self._load_since = (model, frames)
        since = frames - self._load_since[1]
        window = min(frames, self.agent.config.telemetry.latency_window)
        member, p50 = self._member(model), snapshot["inference_ms_p50"]
        if member is not None and p50 > 0 and 2 * since >= window:
            predicted = self.set.index.variants[member[0]].latency_ms
            if predicted > 0:
                self._load = p50 / predicted
        return self._load

    def read_context(self, now: float) -> Context:
        away = self.offline = self._hub_away(now)
        share = self.agent.config.batching.labour_share
        backed_up = self.config.max_hub_queue is not None and self.hub_queue > self.config.max_hub_queue
        labour = (0.0 if (away and self.config.offline == "stop_escalating") or backed_up
                  else math.inf if share is None
                  else share if self.agent.labour.ratio() <= share else 0.0)  # over budget: nothing left for now
        power = self.power.read(now)
        return Context(battery=power.battery, charging=power.charging, load=self._device_load(),
                       free_memory_mb=free_memory_mb(self.config.meminfo), labour_allowed=labour)

    # --- decisions -------------------------------------------------------------------------------------

    def tick(self, now: float) -> Decision | None:
        """Read the context, apply the offline policy, select (at most every interval_s) and apply; returns the
        decision taken now (a hold, switch False, while selection waits), None within the interval."""
        if now < self._next:
            return None
        self._next = now + self.config.interval_s
        self.context = self.read_context(now)
        self._offline_audits()
        active = self._sync()
        held = self._hold(active)
        if held:
            return self.selector.hold(held)
        decision = self.last = self.selector.decide(self.context, now, self._rejected())
        if decision.switch:
            log.info("adapt: %s", decision.reason)
            self._apply(decision)
        self._sync()
        return decision

    def _sync(self) -> tuple[int, int] | None:
        """The selector's running option from the model actually active (after a swap, a rollback, a failure)."""
        self.selector.running = active = self._member(self.agent.model)
        return active

    def _hold(self, active: tuple[int, int] | None) -> str:
        """Why selection waits now ('' when it does not)."""
        if self.worker is not None and self.worker.is_alive():
            return "a variant swap is loading"
        if self.agent.slot.staged:
            return "a staged bundle runs at the next frame"
        if active is None and not self._from_flashed(self.agent.model):
            return self._keep_outside_set()
        if self._paused_tau is not None:
            self._paused_tau = None
            self.agent.telemetry.problem("adapt", "")
        return ""

    def _from_flashed(self, model: Model) -> bool:
        """Whether the model was loaded from the configured `bundle.path` (at start, or rolled back to it): not a hub
        update. Updates are downloaded into the bundle store (and resumed from there after a restart), so they
        never have that path."""
        return Path(model.path).resolve() == self._flashed

    def _keep_outside_set(self) -> str:
        """A running model outside the set that is not the configured bundle (a hub update, also resumed after a
        restart) stays; no labour allowed still means tau 0 (its own tau again once labour is allowed). Returns why
        selection waits."""
        model = self.agent.model
        if self._paused_tau is None or self._paused_tau[0] is not model:
            self._paused_tau = (model, model.tau)
        assert self.context is not None
        model.tau = 0.0 if self.context.labour_allowed <= 0 else self._paused_tau[1]
        why = (f"running {model.name} {model.version} is not in the variant set (a hub update): selection "
               "paused, the offline policy applies")
        self.agent.telemetry.problem("adapt", why)
        return why

    def _rejected(self) -> frozenset[int]:
        """Members rolled back at run time: never chosen again (until a restart)."""
        rejected = self.agent.slot.rejected_versions
        return frozenset(i for i, m in enumerate(self.manifests) if m.model.version in rejected)

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
        """Load, verify (as the member's signed name and version) and health-check it, stage it; the pipeline
        switches between two frames. A staged update is never replaced."""
        name, manifest = self.set.index.variants[decision.variant].name, self.manifests[decision.variant]
        try:
            self.agent.swap_to(self.set.path(decision.variant), tau=decision.tau, keep_staged=True,
                               expect=(manifest.model.name, manifest.model.version))
            self.agent.telemetry.problem("adapt", "")
        except StagedPendingError:
            log.info("adapt: switch to %s skipped: an update is staged", name)
        except Exception as exc:  # a member that fails its check: keep running, say why, retry later
            log.error("adapt: switching to %s failed: %s", name, exc)
            self.agent.telemetry.problem("adapt", f"switch to {name} failed: {exc}")
