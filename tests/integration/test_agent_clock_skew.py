"""A real agent whose wall clock is 15 minutes behind a real hub's (gRPC, the SIMULATED crowd): every escalation
came back EXPIRED, as the hub read the device's deadline on its own clock. Now the agent says when it sent each
request and the hub moves the deadline by the difference. Only the agent's wall clock is shifted (its injectable
clock); the frames are a folder of images through the agent's `images` source."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import ResultCollector, enroll_in, make_keys, null_bundle, start_hub
from hgen.hub.testing.services import free_port

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from hgen.edge_agent.testing import TestKeys

FRAMES = 4


class BehindClock:
    """The wall clock 15 minutes behind (a Pi without a real-time clock before NTP); monotonic time is real."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time() - 900.0


def device_kit(tmp_path: Path) -> tuple[TestKeys, Path, Path]:
    """Signing keys, a null-engine bundle and a folder of FRAMES images (the agent's `images` source)."""
    keys = make_keys(tmp_path / "keys")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(FRAMES):
        cv2.imwrite(str(images / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (28, 28), np.uint8))
    return keys, null_bundle(tmp_path / "bundle", keys), images


def test_an_agent_whose_clock_is_behind_still_gets_people_s_answers(tmp_path: Path) -> None:
    keys, bundle, images = device_kit(tmp_path)
    hub = start_hub(tmp_path / "hub.sqlite", ["cam-1"])
    try:
        config = parse_agent_config({
            "device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem),
                                             "store_dir": str(tmp_path / "store")},
            "source": {"kind": "images", "uri": str(images)}, "gate": {"tau": 1.0},
            "batching": {"size": FRAMES, "max_wait_s": 0.2, "patience_s": 60, "deadline_s": 600},
            "hub": {"url": hub.grpc_url, "secret": hub.secret("cam-1"), "watch_updates": False},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
        seen = ResultCollector()
        agent = Agent(config, callbacks=[seen], clock=BehindClock()).start()
        try:
            assert seen.wait_for(lambda rs: len(seen.with_status("pending")) == FRAMES, 60)
            finals = seen.final_for({r.sample_id for r in seen.with_status("pending")}, 60)
        finally:
            agent.stop()
        assert Counter(r.status.value for r in finals.values()) == {"fused": FRAMES}
        assert hub.app.service.metrics.get("device_clock_skew") >= 1
    finally:
        hub.stop()


class SetAtBoot:
    """A Pi without a real-time clock: the wall clock reads 2 January 1970 until NTP sets it (`set()`), which
    happens when the network, and so the hub link, comes up; monotonic time is real."""

    def __init__(self) -> None:
        self.offset = 86_400.0 - time.time()

    def set(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time() + self.offset


def test_samples_made_before_ntp_set_the_clock_are_answered_after_it(tmp_path: Path) -> None:
    """A boot without network: the agent escalates frames while its clock reads 1970 and the hub is out of reach;
    then the network comes up, NTP sets the clock and the hub link connects. The samples' deadline was a wall time
    in 1970: the hub read it as long past and expired them all unasked. Now the agent sends what is left of it
    (on the monotonic clock) after the request's `sent_at`."""
    keys, bundle, images = device_kit(tmp_path)
    port, clock = free_port(), SetAtBoot()
    config = parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem),
                                         "store_dir": str(tmp_path / "store")},
        "source": {"kind": "images", "uri": str(images)}, "gate": {"tau": 1.0},
        "batching": {"size": FRAMES, "max_wait_s": 0.2, "patience_s": 120, "deadline_s": 600},
        "hub": {"url": f"grpc://127.0.0.1:{port}", "secret": enroll_in(tmp_path / "hub.sqlite", "cam-1"),
                "resend_after_s": 2,
                "watch_updates": False},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    seen = ResultCollector()
    agent = Agent(config, callbacks=[seen], clock=clock).start()
    hub = None
    try:
        assert seen.wait_for(lambda rs: len(seen.with_status("pending")) == FRAMES, 60)
        clock.set()
        hub = start_hub(tmp_path / "hub.sqlite", ["cam-1"], grpc_port=port)
        finals = seen.final_for({r.sample_id for r in seen.with_status("pending")}, 90)
    finally:
        agent.stop()
        if hub is not None:
            hub.stop()
    assert Counter(r.status.value for r in finals.values()) == {"fused": FRAMES}, [r.detail for r in finals.values()]


class Later:
    """Real time plus an offset on both clocks (`skip`): an outage of hours in a test's second."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset


def test_a_sample_past_its_hub_deadline_is_sent_without_its_image(tmp_path: Path) -> None:
    """After an outage longer than the deadline, the backlog's images went up (a gigabyte over a mobile link) only
    for the hub to expire them unseen; now such a sample goes without its image, so the hub can still answer with
    a reply it holds, else EXPIRED."""
    keys = make_keys(tmp_path / "keys")
    clock = Later()
    config = parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(null_bundle(tmp_path / "bundle", keys)),
                                         "public_key": str(keys.public_pem)},
        "source": {"kind": "images", "uri": str(tmp_path)}, "gate": {"tau": 1.0},
        "batching": {"patience_s": 60, "deadline_s": 600}, "hub": {"url": f"grpc://127.0.0.1:{free_port()}"},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    agent = Agent(config, clock=clock)
    try:
        image = np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8)
        pending = agent.process_frame(Frame(0, image, clock.time()))
        (row,) = agent.outbox.rows([pending.sample_id])
        fresh = agent._request(row.batch_id, [row], clock.monotonic())
        assert fresh.samples[0].image.data and fresh.deadline.ToSeconds() - fresh.sent_at.ToSeconds() >= 599
        clock.offset += 601.0
        late = agent._request(row.batch_id, [row], clock.monotonic())
        assert late.samples[0].image.data == b"" and late.samples[0].sample_id == pending.sample_id
        assert late.deadline.ToNanoseconds() == late.sent_at.ToNanoseconds()
    finally:
        agent.stop()
