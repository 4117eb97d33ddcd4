"""A hub left running for months meets clock steps (an NTP correction, a mis-set clock put right): review of what
the knowledge base keeps in wall-clock time. Before: minutes a device stored in while the clock ran ahead kept
counting against its hourly limit until the clock caught up with them (a device at its limit was refused for good
for the whole step, hours or days); a sample set aside for an unreadable image, and the next image retention round,
waited out the step too. SQLite and PostgreSQL where the knowledge base is involved; time moves on the injected
clock."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.kb.images import UNREADABLE_RETRY_S, UnreadableSamples
from hgen.hub.kb.models import DeviceIntakeMinute, Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import closing_maker
from hgen.protos import hub_pb2

CAM = "cam-a"
DAY_S = 86400.0
MakeHub = Callable[..., HubService]


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


def open_hub(url: str, tmp_path: Path, clock: Clock, **limits: object) -> HubService:
    config = parse_hub_config({"devices": [CAM], "limits": limits,
                               "knowledge_base": {"url": url, "keep_unlabelled_images_days": 7.0}})
    kb = KnowledgeBase.open(url, clock=clock)
    return HubService(config, kb, clock=clock)


@pytest.fixture
def hubs(kb_url: str, tmp_path: Path, clock: Clock) -> Iterator[MakeHub]:  # noqa: F811
    yield from closing_maker(functools.partial(open_hub, kb_url, tmp_path, clock))


def submit(hub: HubService, clock: Clock, count: int, deadline_s: float = 600.0) -> list[hub_pb2.SampleReply]:
    """`count` new samples of CAM; the replies refusing some at once."""
    samples = [make_sample(CAM) for _ in range(count)]
    result = hub.submit(make_request(CAM, samples, m=1, deadline_s=deadline_s, now=clock.now), "grpc")
    return [r for r in result.immediate if r.status == hub_pb2.REPLY_STATUS_REJECTED]


def test_hourly_limit_after_the_clock_steps_back(hubs: MakeHub, clock: Clock) -> None:
    """A device used its hour while the hub's clock ran a day ahead; the clock is put right: the device gets the
    hour it is in, not a refusal for the next day (each refusal is final: the device keeps its model's answer)."""
    hub = hubs(max_samples_per_device_per_hour=5)
    assert submit(hub, clock, 5) == []
    assert len(submit(hub, clock, 1)) == 1  # the limit holds within the hour
    clock.now -= DAY_S  # NTP steps the clock back a day
    assert submit(hub, clock, 5) == [], "refused for a whole day after the clock stepped back"
    assert len(submit(hub, clock, 1)) == 1  # and the limit holds again in the hour it is in
    with hub.kb.session() as s:  # the minutes from the clock's future are gone, not waiting to count again
        minutes = s.query(DeviceIntakeMinute.minute).filter_by(device_id=CAM).all()
    assert max(m for (m,) in minutes) <= clock.now // 60


def test_image_retention_round_after_the_clock_steps_back(hubs: MakeHub, clock: Clock) -> None:
    """A retention round ran while the clock was a month ahead; put right, rounds go on every minute, not in a
    month: an image due a week after its sample expired is removed then."""
    hub = hubs()
    start = clock.now
    clock.now = start + 30 * DAY_S
    assert hub.retain_images() is False  # nothing due; the next round was set for a month ahead
    clock.now = start
    submit(hub, clock, 1, deadline_s=10.0)
    clock.now += 20.0
    hub.sweep_once()  # expired unanswered
    clock.now += 8 * DAY_S
    hub.retain_images()
    with hub.kb.session() as s:
        image_sizes = [len(row) for (row,) in s.query(Sample.image_bytes).all()]
    assert image_sizes == [0], "the expired sample's image outlived its 7 days while the round waited for the clock"


def test_unreadable_sample_set_aside_after_the_clock_steps_back(clock: Clock) -> None:
    """A sample set aside for an unreadable image is tried again a minute later, also when the clock stepped back a
    day in between (it used to sit out the day and expire unanswered)."""
    aside = UnreadableSamples(clock)
    aside.set_aside("s-1", "file system busy")
    clock.now -= DAY_S
    clock.now += UNREADABLE_RETRY_S + 1
    assert aside.current() == [], "set aside for a day after the clock stepped back"
