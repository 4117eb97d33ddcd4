"""A device's deadline is read against the clock it was set by. The agent stamps each request with when it sent it,
and the hub moves the deadline by (its own now - that): a Raspberry Pi without a real-time clock, 15 minutes
behind before NTP, had every sample expire at the hub's first sweep, and nobody was ever asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgen.hub.clocks import DeviceClocks
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.samples import make_request, make_sample

HUB_NOW = 1_800_000_000.0


@pytest.fixture
def hub(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": url}})
    service = HubService(config, KnowledgeBase.open(url, clock=lambda: HUB_NOW), clock=lambda: HUB_NOW)
    yield service
    service.close()


def stored_deadline(hub: HubService, sample_id: str) -> float:
    with hub.kb.session() as s:
        return s.get(Sample, sample_id).deadline


@pytest.mark.parametrize("device_offset", [-900.0, 0.0, 3600.0])
def test_a_deadline_is_moved_to_the_hubs_clock(hub: HubService, device_offset: float) -> None:
    device_now = HUB_NOW + device_offset  # -900: the device's clock is 15 minutes behind
    sample = make_sample("cam-1", confidence=0.4)
    request = make_request("cam-1", [sample], m=1, deadline_s=60.0, now=device_now)
    request.sent_at.FromNanoseconds(int(device_now * 1e9))
    assert hub.submit(request, "grpc").accepted == [sample.sample_id]
    assert stored_deadline(hub, sample.sample_id) == pytest.approx(HUB_NOW + 60.0)
    assert hub.metrics.get("device_clock_skew") == (0 if device_offset == 0 else 1)


def test_a_request_without_sent_at_keeps_its_deadline_as_before(hub: HubService) -> None:
    sample = make_sample("cam-1", confidence=0.4)
    request = make_request("cam-1", [sample], m=1, deadline_s=60.0, now=HUB_NOW - 30.0)  # an older agent
    hub.submit(request, "grpc")
    assert stored_deadline(hub, sample.sample_id) == pytest.approx(HUB_NOW + 30.0)


def request_at(device_now: float, deadline_s: float = 60.0):  # type: ignore[no-untyped-def]
    sample = make_sample("cam-1", confidence=0.4)
    request = make_request("cam-1", [sample], m=1, deadline_s=deadline_s, now=device_now)
    request.sent_at.FromNanoseconds(int(device_now * 1e9))
    return sample, request


def test_time_a_request_spent_queued_is_not_taken_for_clock_skew(hub: HubService) -> None:
    """A request the broker held for an hour while the hub was down read as a clock an hour behind: the stale
    sample got a fresh deadline (and people were asked about it), and the device was reported as skewed."""
    for _ in range(3):  # live requests: the device's clock is right
        sample, request = request_at(HUB_NOW)
        hub.submit(request, "mqtt")
    queued, request = request_at(HUB_NOW - 3600.0)  # sent an hour ago, held by the broker
    hub.submit(request, "mqtt")
    assert stored_deadline(hub, queued.sample_id) == pytest.approx(HUB_NOW - 3600.0 + 60.0)  # long past: expires
    assert hub.metrics.get("device_clock_skew") == 0


def test_a_deadline_of_zero_gets_the_default(hub: HubService) -> None:
    sample, request = request_at(HUB_NOW)
    request.deadline.FromNanoseconds(0)
    hub.submit(request, "grpc")
    assert stored_deadline(hub, sample.sample_id) == pytest.approx(HUB_NOW + hub.config.limits.default_deadline_s)


def test_the_estimate_follows_a_clock_set_right_at_once_and_a_clock_ahead_as_it_is() -> None:
    clocks = DeviceClocks(recent=4)
    assert clocks.observe("pi", 900.0) == 900.0  # the first request: all there is to go on
    assert clocks.observe("pi", 4500.0) == 900.0  # then queued an hour: only the clock's part moves its deadline
    assert clocks.observe("pi", 0.5) == 0.5  # NTP set the clock right
    assert clocks.observe("pi", 3600.0) == 0.5 and clocks.skew("pi") == 0.5
    assert clocks.observe("phone", -120.0) == -120.0  # ahead: not queueing, applied as it is
