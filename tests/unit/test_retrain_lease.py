"""One retrain per model across hub processes: a lease row per model in the knowledge base.

Two workers (own engines, as two hub processes would have) share one database. A gated stand-in pipeline keeps a
retrain "running" until the test releases it, so what is asserted is the workers' coordination, not training.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hgen.hub.errors import RetrainBusyError, RetrainError, UnknownModelError, VersionTakenError
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.retrain import RetrainStore, RetrainWorker, RunRecord, VersionRecord
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)

MODEL = "lenet5"
WAIT_S = 30.0


@dataclass(frozen=True)
class ModelEntry:
    name: str
    threshold: int = 10**9  # never reached: only explicit requests start retrains here


@dataclass
class Models:
    models: tuple[ModelEntry, ...] = (ModelEntry(MODEL),)


@dataclass
class GatedPipeline:
    """What the worker calls on RetrainPipeline; `execute` marks the run running and holds until `gate` is set."""

    store: RetrainStore
    config: Models = field(default_factory=Models)
    started: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    def model_config(self, name: str) -> ModelEntry:
        found = next((m for m in self.config.models if m.name == name), None)
        if found is None:
            raise UnknownModelError(f"unknown model {name!r}")
        return found

    def current(self, name: str) -> VersionRecord:
        return VersionRecord(name, "1.0.0", "model.keras", "bundle", 0.8, 1.0, 0.0)

    def execute(self, run: RunRecord) -> RunRecord:
        self.store.start_run(run.id)
        self.started.set()
        released = self.gate.wait(WAIT_S)
        self.store.finish_run(run.id, "rejected", error="stand-in pipeline" if released else "gate never opened")
        return self.store.run(run.id)  # type: ignore[return-value]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[RetrainStore]]:
    """Stores of two hub processes on one SQLite file, sharing a simulated clock (`stores[0].clock`)."""
    clock = Clock()
    kbs = [KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}") for _ in range(2)]
    yield [RetrainStore(kb, clock=clock) for kb in kbs]
    for kb in kbs:
        kb.close()


def worker(store: RetrainStore, **options: float) -> RetrainWorker:
    return RetrainWorker(GatedPipeline(store), store, **options)  # type: ignore[arg-type]


def test_two_workers_asking_at_once_exactly_one_runs(kb_url: str) -> None:
    kbs = [KnowledgeBase.open(kb_url) for _ in range(2)]
    workers = [worker(RetrainStore(kb)).start() for kb in kbs]
    start = threading.Barrier(2)
    outcomes: dict[int, RunRecord | RetrainBusyError] = {}

    def ask(i: int) -> None:
        start.wait(timeout=WAIT_S)
        try:
            outcomes[i] = workers[i].request(MODEL, "operator")
        except RetrainBusyError as exc:
            outcomes[i] = exc

    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT_S)
        won = [i for i, o in outcomes.items() if isinstance(o, RunRecord)]
        assert len(won) == 1 and len(outcomes) == 2, outcomes
        winner, loser, run = workers[won[0]], workers[1 - won[0]], outcomes[won[0]]
        assert isinstance(run, RunRecord)
        busy = str(outcomes[1 - won[0]])
        assert f"is already queued or running on {winner.holder}" in busy and "one at a time per model" in busy
        assert winner.pipeline.started.wait(WAIT_S)  # type: ignore[attr-defined]
        assert loser.busy(MODEL) and not loser.pipeline.started.is_set()  # type: ignore[attr-defined]
        with pytest.raises(RetrainBusyError, match=f"retrain {run.id} of 'lenet5'"):
            loser.request(MODEL, "threshold")
        winner.pipeline.gate.set()  # type: ignore[attr-defined]
        first = winner.wait(run.id, timeout=WAIT_S)
        assert loser.store.live_lease(MODEL) is None  # released when the run ended
        loser.pipeline.gate.set()  # type: ignore[attr-defined]
        second = loser.wait(loser.request(MODEL, "operator").id, timeout=WAIT_S)
        assert [r.id for r in loser.store.runs(MODEL)] == [second.id, first.id]  # no third run was stored
        assert second.started_at >= first.finished_at  # never both at once
    finally:
        for w in workers:
            w.pipeline.gate.set()  # type: ignore[attr-defined]
            w.stop(timeout=WAIT_S)
        for kb in kbs:
            kb.close()


def test_an_expired_lease_is_taken_over_and_its_run_marked_failed(stores: list[RetrainStore]) -> None:
    clock = stores[0].clock
    crashed = worker(stores[0], lease_ttl_s=30.0)  # never started: nothing renews its lease, as after a crash
    orphan = crashed.request(MODEL, "api")
    survivor = worker(stores[1], lease_ttl_s=30.0)
    with pytest.raises(RetrainBusyError, match=r"lease ends in 30 s unless renewed"):
        survivor.request(MODEL, "api")
    clock.now += 29.0  # type: ignore[attr-defined]
    assert worker(stores[1]).store.run(orphan.id).status == "queued"  # a hub starting now leaves a live lease's run
    with pytest.raises(RetrainBusyError):
        survivor.request(MODEL, "api")
    clock.now += 1.5  # type: ignore[attr-defined]
    taken = survivor.request(MODEL, "api")
    lease = stores[1].live_lease(MODEL)
    assert lease is not None and lease.holder == survivor.holder and lease.run_id == taken.id
    old = stores[1].run(orphan.id)
    assert old.status == "failed" and f"{crashed.holder} stopped renewing its retrain lease" in old.error
    assert not stores[0].renew_lease(MODEL, crashed.holder, 30.0)  # the old holder learns it lost the lease
    crashed.stop(timeout=1)  # its queued run is already failed (and keeps why); the survivor's lease is untouched
    assert "stopped renewing" in stores[1].run(orphan.id).error
    assert stores[1].live_lease(MODEL).holder == survivor.holder
    survivor.pipeline.gate.set()  # type: ignore[attr-defined]
    survivor.start()
    try:
        assert survivor.wait(taken.id, timeout=WAIT_S).status == "rejected"
        assert not crashed.pipeline.started.is_set()  # type: ignore[attr-defined]
    finally:
        survivor.stop(timeout=WAIT_S)


def renewed_after(store: RetrainStore, expiry: float) -> bool:
    """Poll (deadline WAIT_S) until the model's lease ends later than `expiry`: the keeper has renewed it."""
    deadline = time.monotonic() + WAIT_S
    while (lease := store.live_lease(MODEL)) is None or lease.expires_at <= expiry:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # the poll interval; the deadline above bounds the wait
    return True


def test_a_running_retrain_keeps_renewing_its_short_lease(stores: list[RetrainStore]) -> None:
    """The keeper renews every ttl/3 of real time; the lease's clock is simulated, so a renewal is seen as the
    expiry moving with the clock, and passing the first expiry is a step of the clock, not a wait."""
    clock, ttl = stores[0].clock, 0.3
    running, other = worker(stores[0], lease_ttl_s=ttl).start(), worker(stores[1])
    try:
        run = running.request(MODEL, "operator")
        assert running.pipeline.started.wait(WAIT_S)  # type: ignore[attr-defined]
        first_expiry = other.store.live_lease(MODEL).expires_at
        clock.now += ttl / 2  # type: ignore[attr-defined]
        assert renewed_after(other.store, first_expiry), "the running retrain's lease was never renewed"
        clock.now = first_expiry + ttl / 4  # type: ignore[attr-defined]  # past the first expiry
        with pytest.raises(RetrainBusyError, match=f"is already queued or running on {running.holder}"):
            other.request(MODEL, "api")
        running.pipeline.gate.set()  # type: ignore[attr-defined]
        assert running.wait(run.id, timeout=WAIT_S).status == "rejected"
        assert other.store.live_lease(MODEL) is None
    finally:
        running.pipeline.gate.set()  # type: ignore[attr-defined]
        running.stop(timeout=WAIT_S)


def test_stopping_a_worker_fails_its_queued_runs_and_frees_their_leases(stores: list[RetrainStore]) -> None:
    idle = worker(stores[0])
    queued = idle.request(MODEL, "cli")
    with pytest.raises(RetrainBusyError, match="on this hub"):
        idle.request(MODEL, "cli")
    with pytest.raises(UnknownModelError):
        idle.request("resnet", "cli")
    idle.stop(timeout=1)
    record = stores[1].run(queued.id)
    assert record.status == "failed" and "stopped before this retrain started" in record.error
    assert stores[1].live_lease(MODEL) is None
    assert worker(stores[1]).request(MODEL, "cli").id > queued.id  # another hub may go at once


def test_a_hub_that_lost_its_lease_mid_retrain_publishes_nothing(stores: list[RetrainStore]) -> None:
    """A hub cut off longer than its lease kept training, then published; the hub that took the lease over
    published the same number, and the second write replaced the first one's version, which devices might run."""
    clock = stores[0].clock
    slow, other = stores
    run = slow.claim_run(MODEL, "api", "1.0.0", "hub-a", 30.0)
    slow.start_run(run.id)
    clock.now += 31.0  # type: ignore[attr-defined]  # hub a cut off: no renewal
    taken = other.claim_run(MODEL, "api", "1.0.0", "hub-b", 30.0)
    other.start_run(taken.id)
    other.add_version(VersionRecord(MODEL, "1.0.1", "b.keras", "b", 0.5, 1.0, 0.0, taken.id),
                      published=(taken.id, {}))
    with pytest.raises(VersionTakenError, match="version 1.0.1 of 'lenet5' exists already"):
        slow.add_version(VersionRecord(MODEL, "1.0.1", "a.keras", "a", 0.5, 1.0, 0.0, run.id), published=(run.id, {}))
    with pytest.raises(RetrainError, match=f"run {run.id} of 'lenet5' is no longer running"):
        slow.add_version(VersionRecord(MODEL, "1.0.2", "a.keras", "a", 0.5, 1.0, 0.0, run.id), published=(run.id, {}))
    assert [v.version for v in other.versions(MODEL)] == ["1.0.1"] and other.versions(MODEL)[0].keras_path == "b.keras"
    assert other.run(run.id).status == "failed" and other.run(taken.id).status == "published"


def test_a_crashed_hubs_lease_does_not_outlast_a_clock_stepped_back(stores: list[RetrainStore]) -> None:
    """A hub crashed holding a lease while the clock ran a day ahead; once NTP put the clock right, the lease looked
    live for that day and the model's retrains waited it out. A lease further ahead than LEASE_HORIZON_S is expired."""
    from hgen.hub.retrain.records import LEASE_HORIZON_S

    clock = stores[0].clock
    crashed, other = stores
    clock.now += 86_400.0  # type: ignore[attr-defined]  # the clock runs a day ahead
    crashed.claim_run(MODEL, "api", "1.0.0", "hub-a", 30.0)  # then the hub crashes, never renewing
    clock.now -= 86_400.0  # type: ignore[attr-defined]  # put right
    assert other.live_lease(MODEL) is None
    taken = other.claim_run(MODEL, "api", "1.0.0", "hub-b", 30.0)
    assert other.live_lease(MODEL).holder == "hub-b" and taken.status == "queued"
    clock.now += LEASE_HORIZON_S / 2  # type: ignore[attr-defined]  # hub b renews as it runs: its lease is live
    assert other.renew_lease(MODEL, "hub-b", 30.0) and other.live_lease(MODEL).holder == "hub-b"
