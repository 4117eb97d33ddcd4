"""Hub-driven hot swap over MQTT, with real parts: a hub running MQTT (a real Mosquitto) and gRPC on loopback
publishes new bundles through its normal publish path (`HubPublisher`: register for FetchBundle, retained
`ModelUpdate` on `<prefix>/<device>/updates`). The agent is linked by mqtt:// only and has no `hub.bundle_url`:
it must fetch from the notice's `fetch_uri` (the hub's grpc:// bundle service), verify, health-check and switch.

Bundles are the real LiteRT LeNet-5 bundles of hgen.compiler.testing (v1, v2, one for rpi4); frames come from an
MJPG video read through OpenCV at 20 fps with pacing `all`: every frame must come out, in order, across the swap
and the refused bundles. (Live pacing would make the outcome depend on how busy the machine is: a frame more than
a period late is dropped; the swap pause itself is measured in tools/bench/agent.py.)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.testing import ResultCollector, RunningHub, digits_28, start_hub, wait_agent, write_video
from hgen.hub.retrain.publish import BuiltBundle
from hgen.hub.testing.fixtures import broker  # noqa: F401  (pytest fixture: a real Mosquitto)
from hgen.hub.testing.services import Broker, free_port
from hgen.runtime.bundle.manifest import SIGNATURE_NAME

DEVICE = "cam-1"
NAME = "lenet5-digits"
FRAMES = 240


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    images, _ = digits_28(200)
    return write_video(tmp_path_factory.mktemp("video") / "digits.avi", 200, images=images)


@pytest.fixture
def hub(tmp_path: Path, broker: Broker) -> Iterator[RunningHub]:  # noqa: F811
    running = start_hub(tmp_path / "hub.db", [DEVICE], broker=broker)
    yield running
    running.stop()


def built(archive: Path, target: str) -> BuiltBundle:
    """What the retrain pipeline hands the publisher: the packed archive, its signature and the devices."""
    directory = archive.with_suffix("")
    signature_file = directory / SIGNATURE_NAME
    signature = signature_file.read_bytes() if signature_file.exists() else b""
    return BuiltBundle(target, NAME, directory, archive, signature, (DEVICE,))


def corrupt_copy(archive: Path, dest: Path) -> Path:
    shutil.copyfile(archive, dest)
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def test_mqtt_update_notice_swaps_with_no_dropped_frames_and_bad_bundles_refused(
        tmp_path: Path, bundles: dict[str, Path], video: Path, broker: Broker, hub: RunningHub) -> None:  # noqa: F811
    publisher = hub.app.publisher()
    data = {
        "device_id": DEVICE,
        "bundle": {"path": str(bundles["v1"]), "public_key": str(bundles["public_key"]),
                   "expected_target": "x86_64", "store_dir": str(tmp_path / "store")},
        "source": {"kind": "video", "uri": str(video), "fps_limit": 20, "pacing": "all", "loop": True,
                   "max_frames": FRAMES},
        "gate": {"tau": 0.0, "audit_share": 0.0},
        "hub": {"url": broker.url, "secret": hub.secret(DEVICE)},  # MQTT only: bundles come from the notice's fetch_uri
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
    }
    config = parse_agent_config(data)
    collector = ResultCollector()
    with Agent(config, callbacks=[collector]) as agent:
        assert collector.wait_for(lambda rs: len(rs) >= 30, 30)
        notice = publisher.publish(built(bundles["v2"], "x86_64"), "0.2.0")
        assert notice.fetch_uri == hub.grpc_url and notice.fetch_uri.startswith("grpc://")
        assert wait_agent(agent, lambda: agent.telemetry.count("swaps") == 1, 30), agent.telemetry.problems
        assert agent.model.version == "0.2.0"
        refused = [(corrupt_copy(bundles["v2"], tmp_path / "corrupt.hgb"), "x86_64", "0.2.1"),
                   (bundles["rpi4"], "rpi4", "0.3.0")]
        reasons = []
        for count, (archive, target, version) in enumerate(refused, start=1):
            publisher.publish(built(archive, target), version)
            assert wait_agent(agent, lambda: agent.telemetry.count("swaps_rejected") == count, 30)
            assert agent.model.version == "0.2.0" and version in agent.telemetry.problems["swap"]
            reasons.append(agent.telemetry.problems["swap"])
        # Both were downloaded in full (the notice's hashes match what the hub serves) and refused on verification:
        # the flipped byte fails a file's hash ("modified") or, inside a compressed member, the archive ("corrupt").
        assert ("modified" in reasons[0] or "corrupt" in reasons[0]) and "'rpi4'" in reasons[1], reasons
        assert agent.wait(60)
        snap = agent.telemetry.snapshot()
    first = [r for r in collector.results if r.status.value == "model"]
    assert sorted(r.frame_index for r in first) == list(range(FRAMES))
    assert snap["frames_dropped"] == 0 and snap["frames"] == FRAMES and snap["rollbacks"] == 0
    versions = [r.bundle_version for r in first]
    assert versions[0] == "0.1.0" and versions[-1] == "0.2.0" and versions == sorted(versions)
    # The refused downloads were deleted; the one running is recorded. A reboot with the hub out of reach (nothing
    # listens on its port) comes back on the bundle the hub pushed, not the one the device was flashed with.
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["current.json", f"{NAME}-0.2.0.hgb"]
    offline = parse_agent_config(data | {"hub": {"url": f"mqtt://127.0.0.1:{free_port()}", "secret": "s"},
                                         "source": data["source"] | {"max_frames": 10}})
    again = ResultCollector()
    with Agent(offline, callbacks=[again]) as agent:
        assert agent.model.version == "0.2.0"
        assert agent.wait(60)
    assert len(again.results) == 10 and {r.bundle_version for r in again.results} == {"0.2.0"}


def test_device_connecting_after_the_notice_still_swaps(tmp_path: Path, bundles: dict[str, Path], video: Path,
                                                        broker: Broker, hub: RunningHub) -> None:  # noqa: F811
    """The notice is retained: a device that was offline when it was published gets it on connecting."""
    hub.app.publisher().publish(built(bundles["v2"], "x86_64"), "0.2.0")
    config = parse_agent_config({
        "device_id": DEVICE,
        "bundle": {"path": str(bundles["v1"]), "public_key": str(bundles["public_key"]),
                   "expected_target": "x86_64", "store_dir": str(tmp_path / "store")},
        "source": {"kind": "video", "uri": str(video), "fps_limit": 30, "loop": True, "max_frames": 90},
        "gate": {"tau": 0.0, "audit_share": 0.0},
        "hub": {"url": broker.url, "secret": hub.secret(DEVICE)},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
    })
    with Agent(config) as agent:
        assert wait_agent(agent, lambda: agent.telemetry.count("swaps") == 1, 30), agent.telemetry.problems
        assert agent.model.version == "0.2.0" and agent.telemetry.count("swaps_rejected") == 0
        assert agent.wait(30)
