"""Issue 17, the fast version of the soak (tools/bench/soak.py runs the long one): the broker and the hub are
killed with SIGKILL several times under a 60 fps stream; every escalated sample is still answered and fused
exactly once, the hub stores it and its reply once, and the device gets few duplicate replies.

Real parts: a LiteRT bundle, Mosquitto (authenticated, persistence as shipped), the hub in its own process
(hgen.hub.testing.hub_process, SQLite) so it can die like a redeployed one, with the simulated crowd
(simulated people, labelled so) answering. A camera cannot run here: frames come from an MJPG video read
through OpenCV's VideoCapture like a camera's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import ResultStatus
from hgen.edge_agent.testing import ResultCollector, digits_28, enroll_in, restartable_broker, write_video
from hgen.hub.testing.hub_process import HubProcess, hub_process_config, kb_counts
from hgen.hub.testing.services import free_port

DEVICE = "cam-1"
FRAMES = 480
MAX_DUPLICATE_REPLIES_PER_SAMPLE = 2  # the target


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    images, _ = digits_28(200)
    return write_video(tmp_path_factory.mktemp("video") / "digits.avi", 200, images=images)


def agent_config(tmp: Path, bundles: dict[str, Path], video: Path, url: str, secret: str):  # type: ignore[no-untyped-def]
    return parse_agent_config({
        "device_id": DEVICE,
        "bundle": {"path": str(bundles["v1"]), "public_key": str(bundles["public_key"]),
                   "expected_target": "x86_64", "store_dir": str(tmp / "store")},
        "source": {"kind": "video", "uri": str(video), "fps_limit": 60, "loop": True, "max_frames": FRAMES},
        "gate": {"tau": 0.9, "audit_share": 0.0},
        "batching": {"size": 8, "max_wait_s": 0.3, "patience_s": 120},
        "hub": {"url": url, "resend_after_s": 2.0, "secret": secret, "watch_updates": False},
        "outbox": {"path": str(tmp / "outbox.sqlite")},
        "telemetry": {"status_interval_s": 0.5},
    })


def run_with_faults(agent: Agent, collector: ResultCollector, faults: list) -> None:  # type: ignore[type-arg]
    """Fire fault i once 20 * (i + 1) samples were escalated (progress-driven, no sleeps), then drain."""
    for i, fault in enumerate(faults):
        target = 20 * (i + 1)
        assert collector.wait_for(lambda rs, n=target: sum(r.status is ResultStatus.PENDING for r in rs) >= n, 120)
        fault()
    assert agent.wait(120)
    assert agent.wait_outbox_empty(120), f"outbox still holds {agent.outbox.depth()} samples"
    assert agent.wait_settled(60)


def check_exactly_once(collector: ResultCollector, db_url: str, duplicate_replies: int) -> None:
    first = [r for r in collector.results if r.status in (ResultStatus.MODEL, ResultStatus.PENDING)]
    assert sorted(r.frame_index for r in first) == list(range(FRAMES)), "one first result per frame"
    pending = {r.sample_id for r in collector.with_status("pending")}
    fused = Counter(r.sample_id for r in collector.with_status("fused"))
    assert len(pending) >= 100, "too few escalations for the faults to hit anything"
    assert set(fused) == pending and max(fused.values()) == 1, "every escalated sample fused exactly once"
    assert not collector.with_status("late") and not collector.with_status("timeout")
    stored, replies, multi = kb_counts(db_url)
    assert stored == pending and replies == len(pending) and multi == 0
    assert duplicate_replies <= MAX_DUPLICATE_REPLIES_PER_SAMPLE * len(pending), \
        f"{duplicate_replies} duplicate replies for {len(pending)} samples"


def test_mqtt_broker_killed_3_times_and_hub_twice_every_sample_fused_once(mosquitto_required, tmp_path, bundles,
                                                                           video) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    secret = enroll_in(tmp_path / "hub.db", DEVICE)
    with restartable_broker() as broker:
        mqtt = broker.hub_mqtt(client_id="hub-crash-test")  # the same session across hub restarts
        hub = HubProcess(tmp_path / "hub.yaml", hub_process_config(tmp_path, db_url, [DEVICE], free_port(), mqtt))
        hub.start()
        try:
            def broker_crash() -> None:
                broker.kill9()
                broker.start()  # same port, same persistence folder

            def hub_crash() -> None:
                hub.kill9()
                hub.start()

            collector = ResultCollector()
            with Agent(agent_config(tmp_path, bundles, video, broker.url, secret), callbacks=[collector]) as agent:
                run_with_faults(agent, collector, [broker_crash, hub_crash, broker_crash, hub_crash, broker_crash])
                duplicates = agent.telemetry.count("duplicate_replies")
        finally:
            hub.stop()
    assert broker.kills == 3 and hub.kills == 2
    check_exactly_once(collector, db_url, duplicates)


def test_grpc_hub_killed_3_times_every_sample_fused_once(tmp_path, bundles, video) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    secret = enroll_in(tmp_path / "hub.db", DEVICE)
    hub = HubProcess(tmp_path / "hub.yaml", hub_process_config(tmp_path, db_url, [DEVICE], free_port()))
    hub.start()
    try:
        def hub_crash() -> None:
            hub.kill9()
            hub.start()

        collector = ResultCollector()
        with Agent(agent_config(tmp_path, bundles, video, hub.grpc_url, secret), callbacks=[collector]) as agent:
            run_with_faults(agent, collector, [hub_crash] * 3)
            duplicates = agent.telemetry.count("duplicate_replies")
    finally:
        hub.stop()
    assert hub.kills == 3
    check_exactly_once(collector, db_url, duplicates)
