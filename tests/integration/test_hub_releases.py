"""An operator's releases reach the field: `hgen-hub publish` and `hgen-hub rollback`, run as commands beside a
serving hub (a real Mosquitto, gRPC on loopback, SQLite shared through the file), hot-swap real agents: one
linked by MQTT only (it hears of the CLI's bundles only because the serving hub relays them), one by gRPC.

The rolled-back version runs the very model file the device was flashed with, under a new version number.
Frames: an MJPG video of digits read through OpenCV (the camera stand-in).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.errors import SwapError
from hgen.edge_agent.testing import (
    RunningHub,
    digits_28,
    start_hub,
    streaming_agent_config,
    wait_agent,
    write_video,
)
from hgen.hub.cli import main as hub_cli
from hgen.hub.testing.fixtures import broker, pg_url  # noqa: F401  (pytest fixtures: Mosquitto, PostgreSQL)
from hgen.hub.testing.models import DeployedModel, deploy_lenet, recompiled, retrain_section
from hgen.hub.testing.services import Broker
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import Manifest

DEVICES = ("cam-mqtt", "cam-grpc")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    return deploy_lenet(tmp_path_factory.mktemp("deployed"), epochs=1, limit=300)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    images, _ = digits_28(100)
    return write_video(tmp_path_factory.mktemp("video") / "digits.avi", 100, images=images)


@pytest.fixture
def hub(tmp_path: Path, broker: Broker, deployed: DeployedModel) -> Iterator[RunningHub]:  # noqa: F811
    retrain = retrain_section(deployed, tmp_path / "store", devices=dict.fromkeys(DEVICES, "x86_64"),
                              threshold=100_000)
    running = start_hub(tmp_path / "hub.db", list(DEVICES), broker=broker, overrides={"retrain": retrain})
    yield running
    running.stop()


def agent_config(tmp_path: Path, deployed: DeployedModel, video: Path, device: str, url: str,
                 secret: str) -> Any:
    return streaming_agent_config(tmp_path, deployed.bundle_dir, deployed.public_key, video, device, url, secret)


def test_cli_publish_and_rollback_hot_swap_devices_on_both_transports(
        tmp_path: Path, deployed: DeployedModel, video: Path, broker: Broker, hub: RunningHub) -> None:  # noqa: F811
    config = tmp_path / "hub.yaml"  # what the operator's commands read: the serving hub's database and models
    config.write_text(json.dumps({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                  "retrain": hub.app.config.retrain.model_dump(mode="json")}))
    bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
    original = Manifest.model_validate_json((deployed.bundle_dir / "manifest.json").read_bytes())
    urls = {"cam-mqtt": broker.url, "cam-grpc": hub.grpc_url}
    agents = [Agent(agent_config(tmp_path, deployed, video, d, urls[d], hub.secret(d))).start() for d in DEVICES]
    try:
        assert hub_cli(["publish", "--config", str(config), "--model", deployed.name, "--bundle", str(bundle),
                        "--keras", str(keras_path)]) == 0
        for agent in agents:
            assert wait_agent(agent, lambda a=agent: a.model.version == "1.1.0", 60), agent.telemetry.problems
        assert hub_cli(["rollback", "--config", str(config), "--model", deployed.name]) == 0
        for agent in agents:
            assert wait_agent(agent, lambda a=agent: a.model.version == "1.1.1", 60), agent.telemetry.problems
            running = agent.model.manifest
            assert running.engines[0].sha256 == original.engines[0].sha256  # the flashed model, byte for byte
            assert agent.telemetry.count("swaps") == 2 and agent.telemetry.count("swaps_rejected") == 0
    finally:
        for agent in agents:
            agent.stop()


def test_a_grpc_device_of_another_target_than_the_configured_bundle_gets_its_own_bundles(
        tmp_path: Path, deployed: DeployedModel, video: Path, broker: Broker) -> None:  # noqa: F811
    """The model was compiled for x86_64 and a Pi runs it too: the hub publishes the Pi's builds as
    `lenet5-rpi4`, while the Pi watches its model's name, `lenet5`. It must be told of `lenet5-rpi4` (before:
    it never was, over gRPC, and a Pi enrolled with its target was refused the x86_64 notices)."""
    pi_flashed, _ = recompiled(deployed, tmp_path / "flashed", version="1.0.0", target="rpi4")
    retrain = retrain_section(deployed, tmp_path / "store", devices={"pi-1": "rpi4", "cam-x": "x86_64"},
                              threshold=100_000)
    hub = start_hub(tmp_path / "hub.db", ["pi-1", "cam-x"], overrides={"retrain": retrain})
    try:
        from hgen.hub.retrain.release import Releases

        config = streaming_agent_config(tmp_path, pi_flashed, deployed.public_key, video, "pi-1", hub.grpc_url,
                                        hub.secret("pi-1"), target="rpi4")
        with Agent(config) as agent:
            x86, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
            pi, _ = recompiled(deployed, tmp_path / "offline", version="1.1.0", target="rpi4")
            assert hub.app.retrain is not None
            run = Releases(hub.app.pipeline).publish(deployed.name, [x86, pi], keras_path)
            assert run.metrics["targets"] == ["rpi4", "x86_64"]
            assert wait_agent(agent, lambda: agent.model.version == "1.1.0", 60), agent.telemetry.problems
            assert agent.model.manifest.target == "rpi4" and agent.telemetry.count("swaps_rejected") == 0
            x86_notice = hub_pb2.ModelUpdate(bundle_name=deployed.name, version="1.1.0")
            assert agent.transport is not None  # its target comes from retrain.models alone: still enforced
            with pytest.raises(SwapError, match="the hub refused the download: PERMISSION_DENIED: pi-1 runs rpi4"):
                agent.transport.fetch_bundle(x86_notice, tmp_path / "x86.part")
    finally:
        hub.stop()


def test_a_hub_serves_a_bundle_another_hub_published_without_sharing_its_disk(
        tmp_path: Path, deployed: DeployedModel, video: Path, pg_url: str) -> None:  # noqa: F811
    """Two hubs on one PostgreSQL, each with its own disk. Hub a publishes a release, then its machine goes away,
    disk and all; a device linked to hub b still gets the release: b serves the archive's copy in the database,
    and its notice points the device at b, not at the hub that published it."""
    from hgen.hub.retrain.release import Releases

    hubs = {}
    for name in ("a", "b"):
        retrain = retrain_section(deployed, tmp_path / name / "store", devices={"cam-b": "x86_64"},
                                  threshold=100_000, enabled=False)
        hubs[name] = start_hub(tmp_path / name / "unused.db", ["cam-b"], overrides={
            "retrain": retrain, "knowledge_base": {"url": pg_url, "image_dir": str(tmp_path / name / "images")}})
    secret = hubs["a"].secret("cam-b")  # enrolled once, in the database both read
    try:
        bundle, keras_path = recompiled(deployed, tmp_path / "offline", version="1.1.0")
        Releases(hubs["a"].app.pipeline).publish(deployed.name, [bundle], keras_path)
        hubs.pop("a").stop()
        shutil.rmtree(tmp_path / "a")
        shutil.rmtree(tmp_path / "offline")
        config = streaming_agent_config(tmp_path, deployed.bundle_dir, deployed.public_key, video, "cam-b",
                                        hubs["b"].grpc_url, secret)
        with Agent(config) as agent:
            assert wait_agent(agent, lambda: agent.model.version == "1.1.0", 60), agent.telemetry.problems
            assert agent.telemetry.count("swaps_rejected") == 0
    finally:
        for running in hubs.values():
            running.stop()
