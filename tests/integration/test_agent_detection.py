"""The edge agent with an H-YOLO bundle end to end: a real grid detector (trained for seconds on digit canvases,
signed as a `yolo` LiteRT bundle), frames of 64x64 canvases it never trained on read back from an MJPG video
through OpenCV, a real hub on loopback gRPC, and a SIMULATED crowd (labelled so) drawing noisy copies of the true
boxes through the annotator API; the hub aggregates them with box_union and the agent fuses them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import BoxResult, Result, ResultStatus
from hgen.edge_agent.testing import ResultCollector, write_video
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.testing.detection import BoxAnnotator, BoxCrowd, pixel_boxes
from hgen.hub.testing.device import enroll
from hgen.hub.testing.models import DeployedModel
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2
from hgen.hub.transports.grpc_server import GrpcTransport

DEVICE = "cam-det"
FRAMES, CANVAS, TAU, M = 40, 64, 0.5, 3
# Gaussian noise per corner; at 1 px two people's boxes of a small digit sometimes overlapped with IoU < 0.5 and
# box_union kept them apart (which annotator answered which sample depends on thread timing): in a Monte Carlo of
# the 40 test canvases, 27 % of runs split a cluster at 1 px, none of 300 at 0.5 px.
CORNER_NOISE_PX = 0.5


@pytest.fixture(scope="module")
def deployed(grid_detector: DeployedModel) -> DeployedModel:
    """Trained briefly (the session's, tests/integration/conftest.py): it finds most digits, and is unsure about a
    good share of the canvases."""
    return grid_detector


class FrameOracle:
    """Sample id -> true pixel boxes of its frame, via the agent's pending result (sample id -> frame index).

    The hub may hand out a task before the pending result reached the collector (the batch can be sent while the
    pipeline is still emitting), so a lookup waits on the collector's condition, bounded."""

    def __init__(self, collector: ResultCollector, truth: list[np.ndarray]) -> None:
        self.collector = collector
        self.truth = truth

    def __getitem__(self, sample_id: str) -> np.ndarray:
        def frame_of(results: list[Result]) -> int | None:
            return next((r.frame_index for r in results if r.sample_id == sample_id), None)

        assert self.collector.wait_for(lambda rs: frame_of(rs) is not None, 30), f"no result for {sample_id}"
        with self.collector.cond:
            index = frame_of(self.collector.results)
        assert index is not None
        return self.truth[index % len(self.truth)]


class CrowdThread:
    """Lets the simulated box crowd answer whenever the hub has work, until stopped (no sleeps)."""

    def __init__(self, crowd: BoxCrowd) -> None:
        self.crowd = crowd
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="box-crowd", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        generation = 0
        while not self._stop.is_set():
            before = self.crowd.answered
            try:
                self.crowd.run_until_idle()
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.errors.append(exc)
                return
            if self.crowd.answered == before:
                generation = self.crowd.api.wait_for_work(generation, 0.5)

    def stop(self) -> None:
        self._stop.set()
        self.crowd.api.notify_work()
        self._thread.join(timeout=30)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    app = HubApp(parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "grpc": {"port": free_port(), "reply_poll_s": 0.1}})).start()
    yield app
    app.stop()


def near(boxes: tuple[BoxResult, ...], truth: np.ndarray, tolerance: float) -> bool:
    """The same classes as the truth, each box within `tolerance` pixels of a true box of its class."""
    if sorted(b.class_id for b in boxes) != sorted(int(c) for c in truth[:, 4]):
        return False
    return all(np.abs(truth[truth[:, 4] == b.class_id, :4] - [b.x_min, b.y_min, b.x_max, b.y_max]).max(axis=1).min()
               <= tolerance for b in boxes)


def test_unsure_frames_get_people_boxes_and_sure_frames_keep_the_model_boxes(tmp_path, deployed, hub) -> None:
    test = deployed.data.test
    video = write_video(tmp_path / "canvases.avi", FRAMES, size=(CANVAS, CANVAS), images=test.x[:FRAMES, :, :, 0])
    truth = [pixel_boxes(test.boxes[i], CANVAS) for i in range(FRAMES)]
    collector = ResultCollector()
    people = tuple(BoxAnnotator(f"sim-{i}", corner_noise_px=CORNER_NOISE_PX, miss=0.0, wrong_class=0.0)
                   for i in range(M))
    crowd = CrowdThread(BoxCrowd(hub.service.annotators, people, FrameOracle(collector, truth), 10, seed=1))
    config = parse_agent_config({
        "device_id": DEVICE,
        "bundle": {"path": str(deployed.bundle_dir), "public_key": str(deployed.public_key),
                   "expected_target": "x86_64", "store_dir": str(tmp_path / "store")},
        "source": {"kind": "video", "uri": str(video)},
        "gate": {"tau": TAU, "audit_share": 0.0},
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
    assert all(r.label is None and (r.confidence < TAU) == (r.status is ResultStatus.PENDING) for r in first.values())
    pending = {r.sample_id: r for r in first.values() if r.status is ResultStatus.PENDING}
    confident = [r for r in first.values() if r.status is ResultStatus.MODEL]
    assert pending and confident, f"{len(pending)} unsure of {FRAMES}: the gate must split the stream"
    print(f"{len(pending)} of {FRAMES} frames to people; confident frames hold "  # shown with -s
          f"{sum(len(r.boxes) for r in confident)} model boxes")

    fused = {r.sample_id: r for r in collector.with_status("fused")}
    assert set(fused) == set(pending) and len(collector.with_status("fused")) == len(pending)
    for sample_id, result in fused.items():
        assert result.model_boxes == pending[sample_id].model_boxes  # what the model said is kept beside
        assert result.boxes == tuple(sorted(result.human_boxes, key=lambda b: -b.score))  # all drawn by everyone
        assert all(b.score == 1.0 for b in result.boxes)  # people's support, not a model score
        assert near(result.boxes, truth[result.frame_index], 4 * CORNER_NOISE_PX)
    # Confident frames are final at once with the model's own boxes (the model does find digits).
    assert all(r.final and r.boxes == r.model_boxes for r in confident)
    assert sum(len(r.boxes) for r in confident) > 0
    assert snap["escalated"] == snap["fused"] == len(pending) and snap["unknown_replies"] == 0

    # The hub stored each unsure frame once, as an H-YOLO sample with the model's boxes in the frame's pixels.
    stored = stored_samples(hub)
    assert set(stored) == set(pending)
    for sample_id, (kind, size, aggregator, output) in stored.items():
        assert (kind, size, aggregator) == (hub_pb2.HDNN_KIND_YOLO, (CANVAS, CANVAS), "box_union")
        assert not output.class_probabilities and output.confidence == pytest.approx(pending[sample_id].confidence)
        sent = [(b.x_min, b.y_min, b.x_max, b.y_max, b.class_id) for b in output.boxes]
        model = [(b.x_min, b.y_min, b.x_max, b.y_max, b.class_id) for b in pending[sample_id].model_boxes]
        assert np.allclose(sent, model, atol=1e-3) if model else not sent


def stored_samples(hub: HubApp) -> dict[str, tuple[int, tuple[int, int], str, hub_pb2.ModelOutput]]:
    """Sample id -> (H-DNN kind, (width, height), aggregator, model output) as the hub's knowledge base holds it."""
    from sqlalchemy import select

    from hgen.hub.kb.models import Sample

    with hub.service.kb.session() as s:
        return {row.id: (row.hdnn_kind, (row.width, row.height), row.aggregator,
                         hub_pb2.ModelOutput.FromString(row.model_output)) for row in s.scalars(select(Sample))}
