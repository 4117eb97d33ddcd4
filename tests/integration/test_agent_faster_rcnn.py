"""The edge agent with an H-Faster-RCNN bundle end to end: a real two-stage detector (trained for seconds on digit
canvases, signed as a `faster_rcnn` LiteRT bundle), frames of 64x64 canvases it never trained on read back from an
MJPG video through OpenCV (the camera, faked by a video file through the same path), a real hub on loopback gRPC,
and a SIMULATED crowd (labelled so) marking noisy copies of the true boxes as attention regions through the
annotator API; the hub merges them with region_gmm (Eq. 8) and the agent fuses them with its second stage on the
prior anchors placed there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.kinds.faster_rcnn import REGION_CLASS
from hgen.edge_agent.results import ResultStatus
from hgen.edge_agent.testing import ResultCollector, write_video
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.testing.detection import pixel_boxes
from hgen.hub.testing.device import enroll
from hgen.hub.testing.models import DeployedModel, deploy_two_stage
from hgen.hub.testing.regions import RegionAnnotator, RegionCrowd
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2
from hgen.hub.transports.grpc_server import GrpcTransport
from tests.integration.test_agent_detection import CrowdThread, FrameOracle, stored_samples

DEVICE = "cam-frcnn"
FRAMES, CANVAS, M = 24, 64, 3
CORNER_NOISE_PX = 0.5  # as the H-YOLO test: three people's regions of one digit stay one mixture component


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    """Trained briefly on 600 canvases (seconds): it finds some digits and is unsure about many canvases."""
    return deploy_two_stage(tmp_path_factory.mktemp("frcnn"), epochs=6, limit=600)


def median_confidence(deployed: DeployedModel) -> float:
    """tau at the median Eq. 7 confidence of the test frames (Keras outputs; the float LiteRT bundle matches them
    to ~1e-6): a model trained for seconds is unsure of most canvases, and the gate must split the stream."""
    from hgen.compiler.models import load_model_file
    from hgen.compiler.models.two_stage_detector import predict_slots
    from hgen.runtime.hdnn import FusionParams, get_kind

    outputs = predict_slots(load_model_file(deployed.keras_path), deployed.data.test.x[:FRAMES])
    return float(np.median(get_kind("faster_rcnn").confidence(outputs, FusionParams(deployed.temperature))))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    app = HubApp(parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "grpc": {"port": free_port(), "reply_poll_s": 0.1}})).start()
    yield app
    app.stop()


def inside(box: object, truth: np.ndarray) -> bool:
    """The box's centre lies inside some true box."""
    cx, cy = (box.x_min + box.x_max) / 2, (box.y_min + box.y_max) / 2  # type: ignore[attr-defined]
    return bool(np.any((truth[:, 0] <= cx) & (cx <= truth[:, 2]) & (truth[:, 1] <= cy) & (cy <= truth[:, 3])))


def test_unsure_frames_get_one_box_per_region_people_marked_and_sure_frames_keep_the_model_boxes(
        tmp_path, deployed, hub) -> None:  # type: ignore[no-untyped-def]
    test, tau = deployed.data.test, median_confidence(deployed)
    video = write_video(tmp_path / "canvases.avi", FRAMES, size=(CANVAS, CANVAS), images=test.x[:FRAMES, :, :, 0])
    truth = [pixel_boxes(test.boxes[i], CANVAS) for i in range(FRAMES)]
    collector = ResultCollector()
    people = tuple(RegionAnnotator(f"sim-{i}", corner_noise_px=CORNER_NOISE_PX) for i in range(M))
    crowd = CrowdThread(RegionCrowd(hub.service.annotators, people, FrameOracle(collector, truth), seed=1))
    config = parse_agent_config({
        "device_id": DEVICE,
        "bundle": {"path": str(deployed.bundle_dir), "public_key": str(deployed.public_key),
                   "expected_target": "x86_64", "store_dir": str(tmp_path / "store")},
        "source": {"kind": "video", "uri": str(video)},
        "gate": {"tau": tau, "audit_share": 0.0},
        "batching": {"size": 8, "max_wait_s": 0.3, "patience_s": 60, "annotators": M},
        "hub": {"url": f"grpc://127.0.0.1:{hub.transport(GrpcTransport).port}", "resend_after_s": 2.0,
                "secret": enroll(hub, DEVICE)[DEVICE].secret},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    try:
        with Agent(config, callbacks=[collector]) as agent:
            assert agent.wait(60)
            assert agent.wait_settled(60) and agent.wait_outbox_empty(30)
            snap = agent.telemetry.snapshot()
    finally:
        crowd.stop()
    assert not crowd.errors, crowd.errors

    first = {r.frame_index: r for r in collector.results if r.status in (ResultStatus.MODEL, ResultStatus.PENDING)}
    assert sorted(first) == list(range(FRAMES)), "one first result per frame"
    assert all((r.confidence < tau) == (r.status is ResultStatus.PENDING) for r in first.values())
    pending = {r.sample_id: r for r in first.values() if r.status is ResultStatus.PENDING}
    confident = [r for r in first.values() if r.status is ResultStatus.MODEL]
    assert pending and confident, f"{len(pending)} unsure of {FRAMES}: the gate must split the stream"

    fused = {r.sample_id: r for r in collector.with_status("fused")}
    assert set(fused) == set(pending) and len(collector.with_status("fused")) == len(pending)
    for sample_id, result in fused.items():
        true = truth[result.frame_index]
        assert result.model_boxes == pending[sample_id].model_boxes  # what the model said is kept beside
        regions = result.human_boxes  # region_gmm's components: one per digit the three people marked
        assert len(regions) == len(true) and all(r.class_id == REGION_CLASS for r in regions)
        assert all(np.abs(true[:, :4] - [r.x_min, r.y_min, r.x_max, r.y_max]).max(axis=1).min() <= 2.0
                   for r in regions)
        assert len(result.boxes) == len(true)  # one box per region, found by the second stage where people pointed
        assert all(inside(b, true) and 0 <= b.class_id < 10 for b in result.boxes)
    assert all(r.final and r.boxes == r.model_boxes for r in confident)
    assert snap["escalated"] == snap["fused"] == len(pending) and snap["unknown_replies"] == 0

    stored = stored_samples(hub)
    assert set(stored) == set(pending)
    for sample_id, (kind, size, aggregator, output) in stored.items():
        assert (kind, size, aggregator) == (hub_pb2.HDNN_KIND_FASTER_RCNN, (CANVAS, CANVAS), "region_gmm")
        assert output.confidence == pytest.approx(pending[sample_id].confidence)
