"""Bad input over real gRPC and a real Mosquitto: typed errors, counted, logged once; the hub keeps serving and
every accepted sample still gets its reply."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.testing.crowd import CrowdDriver
from hgen.edge_agent.transports.grpc import BearerInterceptor
from hgen.hub.testing.device import MqttDevice, ReplyLog, enroll
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.services import Broker
from hgen.protos import hub_pb2, hub_pb2_grpc
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE = "cam-1"
CAP = 64 * 1024


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest):
    """The hub; with MQTT on the test's `broker` only when the test asks for one (gRPC needs no mosquitto)."""
    data = {"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
            "grpc": {"port": 0, "max_message_bytes": CAP}, "limits": {"max_pixels": 48 * 48}}
    if "broker" in request.fixturenames:
        broker: Broker = request.getfixturevalue("broker")
        data["mqtt"] = broker.hub_mqtt(max_payload_bytes=CAP)
    config = parse_hub_config(data)
    app = HubApp(config).start()
    credential = enroll(app, DEVICE)[DEVICE]
    app.test_secret = credential.secret  # type: ignore[attr-defined]  # for the MQTT test's device
    oracle: dict[str, int] = {}
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(1, 1.0, 10), lambda s: oracle.get(s, 0))
    crowd.start()
    channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{app.transport(GrpcTransport).port}"),
                                     BearerInterceptor(credential.bearer))
    yield app, channel
    channel.close()
    crowd.stop()
    app.stop()


def raw_submit(channel: grpc.Channel, payload: bytes) -> grpc.RpcError:
    call = channel.unary_stream("/hgen.v1.AnnotationHub/Submit", request_serializer=None,
                                response_deserializer=hub_pb2.SampleReply.FromString)
    with pytest.raises(grpc.RpcError) as info:
        list(call(payload, timeout=10))
    return info.value


def refusal_logs(caplog: pytest.LogCaptureFixture, code: str) -> int:
    return sum(1 for r in caplog.records if r.levelno == logging.WARNING and f"({code})" in r.getMessage())


def test_grpc_bad_input_is_typed_counted_logged_once_and_service_continues(running, caplog) -> None:
    app, channel = running
    caplog.set_level(logging.WARNING)
    assert raw_submit(channel, b"\xff\xff\xff garbage").code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raw_submit(channel, b"\x0a" + b"\x80" * (CAP + 10)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    good = make_sample(DEVICE)
    undecodable = make_sample(DEVICE, image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=b"not a png"))
    too_big = make_sample(DEVICE, image=png_image(64))
    duplicate = hub_pb2.Sample()
    duplicate.CopyFrom(good)
    stub = hub_pb2_grpc.AnnotationHubStub(channel)
    replies = list(stub.Submit(make_request(DEVICE, [good, undecodable, too_big, duplicate], m=1), timeout=30))
    by_reason = {r.sample_id: r for r in replies}
    assert by_reason[undecodable.sample_id].reject_reason == hub_pb2.REJECT_REASON_IMAGE_UNDECODABLE
    assert by_reason[too_big.sample_id].reject_reason == hub_pb2.REJECT_REASON_IMAGE_TOO_MANY_PIXELS
    assert by_reason[good.sample_id].status == hub_pb2.REPLY_STATUS_ANSWERED  # accepted one is not lost
    with pytest.raises(grpc.RpcError) as stranger:  # cam-1's credential cannot speak for another device
        list(stub.Submit(make_request("intruder", [make_sample("intruder")], m=1), timeout=30))
    assert stranger.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as status:
        stub.ReportStatus(hub_pb2.DeviceStatus(device_id="intruder"), timeout=10)
    assert status.value.code() == grpc.StatusCode.PERMISSION_DENIED

    metrics = app.service.metrics.snapshot()
    for code, n in {"malformed_message": 1, "message_too_large": 1, "image_undecodable": 1,
                    "image_too_many_pixels": 1, "device_impersonation": 2, "duplicate_sample": 1}.items():
        assert metrics.get(code) == n, code
        if code != "duplicate_sample":
            assert refusal_logs(caplog, code) == (1 if code == "device_impersonation" else n), code  # once per pair
    health = grpc.insecure_channel(f"127.0.0.1:{app.transport(GrpcTransport).port}")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(health).Check(health_pb2.HealthCheckRequest(service="hgen.v1.AnnotationHub"),
                                                      timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    health.close()


def test_mqtt_bad_payloads_are_counted_and_the_next_sample_is_served(running, broker: Broker) -> None:
    app, _ = running
    log = ReplyLog()
    device = MqttDevice(broker.host, broker.port, DEVICE, log, password=app.test_secret)
    try:
        device.publish(b"\xff\xfe not protobuf").wait_for_publish(10)
        device.publish(b"\x00" * (CAP + 1)).wait_for_publish(10)
        device.publish(b"\x12garbage", kind="status").wait_for_publish(10)
        good = make_sample(DEVICE)
        device.submit([make_request(DEVICE, [good], m=1)])
        assert log.wait_for(1, timeout=30)
        assert log.statuses[good.sample_id] == hub_pb2.REPLY_STATUS_ANSWERED
    finally:
        device.close()
    metrics = app.service.metrics.snapshot()
    assert metrics.get("malformed_message") == 2  # the samples payload and the status payload
    assert metrics.get("message_too_large") == 1
