"""Acceptance of the closed loop: a device streams digits over real gRPC, the simulated crowd answers through the
annotator API, the label count reaches the threshold, the worker retrains (filter, distillation, calibration,
acceptance), re-lowers and signs a new bundle, and announces it over gRPC WatchUpdates and MQTT (retained)."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import paho.mqtt.client as mqtt
import pytest

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.testing.crowd import CrowdDriver
from hgen.edge_agent.transports.grpc import BearerInterceptor
from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.models import DeployedModel, deploy_lenet, device_samples, retrain_section
from hgen.hub.testing.samples import make_request
from hgen.hub.testing.services import Broker, free_port
from hgen.hub.transports.mqtt import topic
from hgen.protos import hub_pb2, hub_pb2_grpc
from hgen.runtime.bundle.loader import verify_archive
from hgen.runtime.signing import load_public_key
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE = "cam-1"
SAMPLES, THRESHOLD, M = 90, 60, 3


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    return deploy_lenet(tmp_path_factory.mktemp("deployed"), epochs=2)


class UpdateWatcher:
    """Reads WatchUpdates on a thread; `wait(version)` blocks until that version is announced."""

    def __init__(self, target: str, bundle_name: str, token: str) -> None:
        self.channel = grpc.intercept_channel(grpc.insecure_channel(target), BearerInterceptor(token))
        self.notices: list[hub_pb2.ModelUpdate] = []
        self._cond = threading.Condition()
        stub = hub_pb2_grpc.AnnotationHubStub(self.channel)
        self._call = stub.WatchUpdates(hub_pb2.WatchUpdatesRequest(device_id=DEVICE, bundle_name=bundle_name,
                                                                   known_version="1.0.0"), timeout=300)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for notice in self._call:
                with self._cond:
                    self.notices.append(notice)
                    self._cond.notify_all()
        except grpc.RpcError:
            pass

    def wait(self, version: str, timeout: float) -> hub_pb2.ModelUpdate:
        with self._cond:
            assert self._cond.wait_for(lambda: any(n.version == version for n in self.notices), timeout)
            return next(n for n in self.notices if n.version == version)

    def close(self) -> None:
        self._call.cancel()
        self.channel.close()


def retained_update(mqtt_broker: Broker, secret: str, timeout: float = 15.0) -> hub_pb2.ModelUpdate:
    """Connect after the fact, as a device that was offline: the retained notice must be there."""
    got: list[hub_pb2.ModelUpdate] = []
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late-device", protocol=mqtt.MQTTv5)
    client.username_pw_set(DEVICE, secret)
    client.on_connect = lambda c, *_: c.subscribe(topic("hgen/v1", DEVICE, "updates"), 1)
    client.on_message = lambda _c, _u, msg: (got.append(hub_pb2.ModelUpdate.FromString(msg.payload)), arrived.set())
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    try:
        assert arrived.wait(timeout), "no retained update notice on the device's updates topic"
        return got[0]
    finally:
        client.disconnect()
        client.loop_stop()


def test_threshold_retrain_publishes_signed_bundle(tmp_path: Path, deployed: DeployedModel, broker: Broker) -> None:
    config = parse_hub_config({
        "devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
        "grpc": {"port": free_port()}, "mqtt": broker.hub_mqtt(),
        "retrain": retrain_section(deployed, tmp_path / "models", devices={DEVICE: "x86_64"}, threshold=THRESHOLD,
                                   original_samples=1000, epochs=2, min_holdout=5, tolerance=0.1, holdout_share=0.4)})
    samples, oracle = device_samples(deployed, SAMPLES, DEVICE)
    app = HubApp(config).start()
    credential = enroll(app, DEVICE, target="x86_64")[DEVICE]
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(M, 0.9, 10, seed=1), oracle).start()
    watcher = UpdateWatcher(f"127.0.0.1:{app.transport(GrpcTransport).port}", deployed.name, credential.bearer)
    try:
        log = ReplyLog()
        device = GrpcDevice(f"127.0.0.1:{app.transport(GrpcTransport).port}", log, token=credential.bearer)
        device.submit_until_replied(make_request(DEVICE, samples, m=M))
        device.close()
        assert log.count() == SAMPLES
        run = app.retrain.wait_for_run(deployed.name, after_id=0, timeout=240)
        assert run.status == "published", run.error
        assert run.trigger == "threshold" and run.to_version == "1.0.1"
        assert run.samples_used > 0 and run.filtered_out >= 0
        verdict = run.metrics["acceptance"]
        assert verdict["new_test"] >= verdict["current_test"] - 0.1
        notice = watcher.wait("1.0.1", timeout=30)
        assert notice.bundle_name == deployed.name and len(notice.signature) > 0
        late = retained_update(broker, credential.secret)
        assert (late.version, late.sha256) == ("1.0.1", notice.sha256)
        # an MQTT-only device learns from the notice itself where to fetch the bundle
        assert late.fetch_uri == notice.fetch_uri == f"grpc://127.0.0.1:{app.transport(GrpcTransport).port}"
        record = app.service.kb.bundle(deployed.name)
        (tmp_path / "verified").mkdir()
        manifest = verify_archive(Path(record.path), load_public_key(deployed.public_key), "x86_64", tmp_path / "verified")
        assert manifest.model.version == "1.0.1" and manifest.tau == deployed.tau
        assert app.retrain_store.current_version(deployed.name).version == "1.0.1"
    finally:
        watcher.close()
        crowd.stop()
        app.stop()
