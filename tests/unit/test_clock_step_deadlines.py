"""A hub left running for months meets clock steps: open samples' deadlines and held tasks' timeouts after the wall
clock steps back. Before: both were compared with the stepped clock as they stood, so a step back of an hour kept
every open sample open an hour past its deadline (its device waiting for a reply it had given up on) and every held
task held an hour past its timeout (blocking the others who could answer it). SQLite and PostgreSQL; time moves on
the injected clock."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.services import closing_maker
from hgen.protos import hub_pb2

CAM = "cam-a"
HOUR_S = 3600.0
TIMEOUT_S = 900.0
MakeHub = Callable[..., HubService]


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


def open_hub(url: str, clock: Clock) -> HubService:
    config = parse_hub_config({"devices": [CAM], "knowledge_base": {"url": url},
                               "tasks": {"assignment_timeout_s": TIMEOUT_S}})
    hub = HubService(config, KnowledgeBase.open(url, clock=clock), clock=clock)
    for annotator_id in ("ann-1", "ann-2"):
        hub.kb.register_annotator(annotator_id)
    return hub


@pytest.fixture
def hubs(kb_url: str, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    yield from closing_maker(functools.partial(open_hub, kb_url, clock))


def submit(hub: HubService, now: float, deadline_s: float, m: int = 2) -> str:
    sample = make_sample(CAM)
    result = hub.submit(make_request(CAM, [sample], m=m, deadline_s=deadline_s, now=now), "grpc")
    assert result.accepted == [sample.sample_id]
    return sample.sample_id


def answer(hub: HubService, annotator_id: str) -> str:
    """The annotator takes the next task and answers it; the sample id."""
    task = hub.kb.assign_next(annotator_id)
    assert task is not None
    hub.kb.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=annotator_id, class_id=1))
    return task.sample_id


def status_of(hub: HubService, sample_id: str) -> str:
    with hub.kb.session() as s:
        return str(s.get(Sample, sample_id).status)


def test_open_samples_close_when_the_clock_steps_back(hubs: MakeHub, clock: Clock) -> None:
    """Samples stored in the 10-minute window before the clock stepped back an hour close at the next sweep with the
    answers they have (their devices stop waiting), not an hour late; gold samples, samples stored after the step and
    a sample from another hub process whose clock is a little ahead keep their deadlines."""
    hub = hubs()
    gold = hub.gold.add(png_image(seed=3), 2, hub.config.num_classes, hub.config.limits)
    answered = submit(hub, clock.now, 600.0)
    waiting = submit(hub, clock.now, 600.0)
    assert answer(hub, "ann-1") == answered
    clock.now += 300.0
    clock.now -= HOUR_S  # NTP steps the clock back an hour
    later = submit(hub, clock.now, 600.0)
    ahead = Clock(clock.now + 30.0)  # another hub process on the database, its clock 30 s ahead
    other = open_hub(hub.config.knowledge_base.url, ahead)
    try:
        near = submit(other, ahead.now, 600.0)
    finally:
        other.close()
    hub.sweep_once()
    replies = {r.sample_id: r.status for r in hub.kb.replies_for([answered, waiting])}
    assert replies == {answered: hub_pb2.REPLY_STATUS_PARTIAL, waiting: hub_pb2.REPLY_STATUS_EXPIRED}, \
        "samples stored before the clock stepped back stayed open an hour past their deadline"
    assert [status_of(hub, s) for s in (gold, later, near)] == ["received"] * 3
    clock.now += 631.0  # past both deadlines: ten minutes from each one's own clock
    hub.sweep_once()
    assert [status_of(hub, s) for s in (gold, later, near)] == ["received", "expired", "expired"]


def test_a_held_task_times_out_a_timeout_after_the_clock_steps_back(hubs: MakeHub, clock: Clock) -> None:
    """A task taken just before the clock stepped back an hour is still its holder's (they can answer it) for one
    assignment timeout, then goes back to the queue, not an hour later; its sample (a day's deadline, stored two hours
    before the step) stays open."""
    hub = hubs()
    sample_id = submit(hub, clock.now, 24 * HOUR_S, m=1)
    clock.now += 2 * HOUR_S
    held = hub.kb.assign_next("ann-1")
    assert held is not None and held.sample_id == sample_id
    clock.now -= HOUR_S  # NTP steps the clock back an hour
    hub.sweep_once()
    assert hub.kb.task_state(held.task_id, "ann-1") == "open", "timed out at once: its holder lost the task"
    assert hub.kb.assign_next("ann-2") is None  # the only slot is still held
    clock.now += TIMEOUT_S + 1.0
    hub.sweep_once()
    assert hub.kb.task_state(held.task_id, "ann-1") == "timed_out", \
        "held an hour past its timeout after the clock stepped back"
    again = hub.kb.assign_next("ann-2")
    assert again is not None and again.sample_id == sample_id
    assert status_of(hub, sample_id) == "assigned"

