"""Acceptance: 1,000 samples from a device over real gRPC / a real Mosquitto, answered by the simulated crowd
through the annotator API; the hub is restarted in the middle; every sample gets exactly one reply."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hgen.hub.app import HubApp
from hgen.hub.config import HubConfig, parse_hub_config
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.kb.models import Reply, Sample
from hgen.hub.testing.crowd import CrowdDriver
from hgen.hub.testing.device import GrpcDevice, MqttDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import Broker, free_port
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE = "cam-1"
SAMPLES, BATCH, M = 1000, 50, 3
RESTART_AFTER = 400


class RunningHub:
    """A hub process plus the simulated crowd attached to its annotator API; restartable on the same state."""

    def __init__(self, config: HubConfig, oracle: dict[str, int]) -> None:
        self.config = config
        self.oracle = oracle
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.app = HubApp(self.config).start()
        crowd = SimulatedCrowd.uniform(M, 0.9, 10, seed=self.restarts)
        self.crowd = CrowdDriver(self.app.service.annotators, crowd, self.oracle).start()

    def stop(self) -> None:
        self.crowd.stop()
        self.app.stop()

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self._start()


def config_for(tmp_path: Path, mqtt_broker: Broker | None) -> HubConfig:
    data = {"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
            "grpc": {"port": free_port()}}
    if mqtt_broker is not None:
        data["mqtt"] = mqtt_broker.hub_mqtt()
    return parse_hub_config(data)


def workload(seed: int = 0) -> tuple[list, dict[str, int]]:
    rng = random.Random(seed)
    samples = [make_sample(DEVICE, confidence=rng.uniform(0.3, 0.7), top=rng.randrange(10))
               for _ in range(SAMPLES)]
    oracle = {s.sample_id: rng.randrange(10) for s in samples}
    requests = [make_request(DEVICE, samples[i:i + BATCH], m=M) for i in range(0, SAMPLES, BATCH)]
    return requests, oracle


@pytest.fixture
def hub_factory() -> Iterator[list[RunningHub]]:
    started: list[RunningHub] = []
    yield started
    for hub in started:
        hub.stop()


def check_exactly_once(hub: RunningHub, log: ReplyLog, oracle: dict[str, int]) -> None:
    assert log.count() == SAMPLES
    assert log.duplicated() == 0
    assert hub.app.service.kb.count(Sample) == SAMPLES
    assert hub.app.service.kb.count(Reply) == SAMPLES
    assert hub.app.service.kb.count(Sample, status="answered") == SAMPLES
    correct = sum(log.labels[s].aggregated.class_id == label for s, label in oracle.items())
    assert correct / SAMPLES > 0.9  # majority of three 90%-accurate simulated people


def test_grpc_1000_samples_with_hub_restart(tmp_path: Path, hub_factory: list[RunningHub]) -> None:
    requests, oracle = workload()
    hub = RunningHub(config_for(tmp_path, None), oracle)
    hub_factory.append(hub)
    log = ReplyLog()
    address = f"127.0.0.1:{hub.app.transport(GrpcTransport).port}"
    device = GrpcDevice(address, log, token=enroll(hub.app, DEVICE)[DEVICE].bearer)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(device.submit_until_replied, r) for r in requests]
        assert log.wait_for(RESTART_AFTER, timeout=120)
        hub.restart()
        for future in futures:
            future.result(timeout=180)
    device.close()
    check_exactly_once(hub, log, oracle)
    assert device.resubmissions > 0  # the restart really broke streams


def test_mqtt_1000_samples_with_hub_restart(tmp_path: Path, broker: Broker, hub_factory: list[RunningHub]) -> None:
    requests, oracle = workload(1)
    hub = RunningHub(config_for(tmp_path, broker), oracle)
    hub_factory.append(hub)
    log = ReplyLog()
    device = MqttDevice(broker.host, broker.port, DEVICE, log, password=enroll(hub.app, DEVICE)[DEVICE].secret)
    try:
        device.submit(requests)
        assert log.wait_for(RESTART_AFTER, timeout=120)
        hub.restart()
        assert log.wait_for(SAMPLES, timeout=180), f"{SAMPLES - log.count()} replies missing"
    finally:
        device.close()
    check_exactly_once(hub, log, oracle)
