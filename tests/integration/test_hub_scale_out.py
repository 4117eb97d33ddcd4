"""Scale-out: two hub processes share one Mosquitto (MQTT shared subscription) and one PostgreSQL; each
sample is ingested by exactly one of them and replied to exactly once."""

from __future__ import annotations

from pathlib import Path

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.kb.models import Reply, Sample
from hgen.hub.testing.crowd import CrowdDriver
from hgen.hub.testing.device import MqttDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import Broker

DEVICE = "cam-1"
SAMPLES = 200


def test_two_hubs_share_broker_and_postgres_each_sample_once(tmp_path: Path, broker: Broker, pg_url: str) -> None:
    hubs = []
    for name in ("hub-a", "hub-b"):
        config = parse_hub_config({
            "devices": [DEVICE], "grpc": {"enabled": False},
            "knowledge_base": {"url": pg_url, "image_dir": str(tmp_path / "images")},
            "mqtt": broker.hub_mqtt(client_id=name, share_group="hubs")})
        hubs.append(HubApp(config).start())
    crowds = [CrowdDriver(hub.service.annotators, SimulatedCrowd.uniform(3, 0.9, 10, seed=i), lambda s: 1).start()
              for i, hub in enumerate(hubs)]  # m=3 answers may come from either hub's annotators
    log = ReplyLog()
    device = MqttDevice(broker.host, broker.port, DEVICE, log, password=enroll(hubs[0], DEVICE)[DEVICE].secret)
    try:
        samples = [make_sample(DEVICE) for _ in range(SAMPLES)]
        device.submit([make_request(DEVICE, [s], m=3) for s in samples])  # one message each: spread over hubs
        assert log.wait_for(SAMPLES, timeout=120), f"{SAMPLES - log.count()} replies missing"
    finally:
        device.close()
        for crowd in crowds:
            crowd.stop()
    accepted = [hub.service.metrics.get("accepted") for hub in hubs]
    try:
        assert sum(accepted) == SAMPLES and min(accepted) > 0, accepted  # both worked, neither twice
        assert all(hub.service.metrics.get("duplicate_sample") == 0 for hub in hubs)
        assert log.duplicated() == 0
        assert hubs[0].service.kb.count(Sample) == SAMPLES and hubs[0].service.kb.count(Reply) == SAMPLES
    finally:
        for hub in hubs:
            hub.stop()
