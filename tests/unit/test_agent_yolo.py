"""The agent with H-YOLO bundles, fast: the kind adapter on hand-made grids (pixel boxes, fusion of people's
aggregated boxes), Result JSON with boxes, the swap health check, and a null-engine detector through the agent
(gate, sample for people, outbox, fused reply, restore after a restart). No ML package is loaded."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from hgen.edge_agent.agent import Agent, Waiting
from hgen.edge_agent.config import AgentConfig, SwapConfig, parse_agent_config
from hgen.edge_agent.errors import HealthCheckError
from hgen.edge_agent.kinds import FrameSize, adapter_for
from hgen.edge_agent.kinds._boxes import box_results
from hgen.edge_agent.model import load_model
from hgen.edge_agent.results import BoxResult, Result, ResultStatus
from hgen.edge_agent.swap import ModelSlot
from hgen.edge_agent.testing import make_keys, null_bundle, null_output_shape
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import InputSpec
from hgen.runtime.hdnn import FusionParams, difficulty_from_confidence, get_kind

LABELS = tuple(str(i) for i in range(10))
SIZE = FrameSize(width=64, height=48)  # not square: x and y scale differently
GRID = null_output_shape("yolo", len(LABELS))


def grid_with_one_digit(cls: int = 7, row: int = 1, col: int = 2) -> np.ndarray:
    """A 4x4 grid the model is sure of: nothing anywhere but one digit `cls` centred in cell (row, col),
    half the image wide and high: normalised corners (0.375, 0.125, 0.875, 0.625) for the defaults."""
    out = np.zeros((1, 4, 4, 15), np.float32)
    out[..., 0] = -9.0
    out[0, row, col, 0] = 9.0
    out[0, row, col, 5 + cls] = 12.0
    return out


def model_like() -> SimpleNamespace:
    return SimpleNamespace(kind=get_kind("yolo"), params=FusionParams(), manifest=SimpleNamespace(labels=LABELS))


def box_reply(status: int, *boxes: tuple[float, float, float, float, int, float]) -> hub_pb2.SampleReply:
    aggregated = hub_pb2.AggregatedLabel(boxes=hub_pb2.BoxList(boxes=[
        hub_pb2.Box(x_min=b[0], y_min=b[1], x_max=b[2], y_max=b[3], class_id=b[4], score=b[5]) for b in boxes]),
        aggregator="box_union")
    return hub_pb2.SampleReply(sample_id="s-1", status=status, aggregated=aggregated)


# --- the adapter -------------------------------------------------------------------------------------------


def test_model_boxes_are_pixels_of_the_frame_for_results_and_people() -> None:
    adapter, model, outputs = adapter_for("yolo"), model_like(), grid_with_one_digit()
    fields = adapter.answer_fields(model, outputs, SIZE)  # type: ignore[arg-type]
    (box,) = fields["boxes"]
    assert fields["model_boxes"] == fields["boxes"] and "label" not in fields
    assert (box.class_id, box.label_name) == (7, "7") and box.score > 0.99
    assert np.allclose([box.x_min, box.y_min, box.x_max, box.y_max], [0.375 * 64, 0.125 * 48, 0.875 * 64, 0.625 * 48])
    result = Result(0, "s-1", 0.0, ResultStatus.MODEL, "escalate", **fields)
    output = adapter.model_output(model, outputs, result)  # type: ignore[arg-type]
    assert not output.class_probabilities and len(output.boxes) == 1
    assert (output.boxes[0].x_max, output.boxes[0].class_id) == pytest.approx((56.0, 7))


def test_a_letterboxed_models_boxes_are_pixels_of_the_frame_and_peoples_boxes_meet_them() -> None:
    """A letterboxed model sees the 64x48 frame as 32x24 inside a 32x32 input, 4 rows of padding above: its boxes
    were scaled by the frame size as if stretched (off by the padding), and people's pixel boxes never met them."""
    size = FrameSize.of(64, 48, InputSpec(shape=(1, 32, 32, 3), resize="letterbox"))
    assert size.placed == pytest.approx((0.0, 0.125, 1.0, 0.875))
    adapter, kind, outputs = adapter_for("yolo"), get_kind("yolo"), grid_with_one_digit()
    (box,) = adapter.answer_fields(model_like(), outputs, size)["boxes"]  # type: ignore[arg-type]
    assert [box.x_min, box.y_min, box.x_max, box.y_max] == pytest.approx([24, 0, 56, 32])
    # one person of three drew the model's 7 where it is in the frame: kept, as the model found it too
    reply = box_reply(hub_pb2.REPLY_STATUS_ANSWERED, (24, 0, 56, 32, 7, 1 / 3))
    answers = adapter.fuse_answers(reply, outputs, size)
    fused = kind.fuse(outputs, answers, FusionParams())[0]
    assert list(fused.classes) == [7]
    (kept,) = adapter.fused_fields(fused, answers, LABELS, size)["boxes"]
    assert [kept.x_min, kept.y_min, kept.x_max, kept.y_max] == pytest.approx([24, 0, 56, 32], abs=1e-4)


def test_difficulty_without_class_probabilities_follows_confidence() -> None:
    assert difficulty_from_confidence(1.0) == 1.0 and difficulty_from_confidence(0.0) == 3.0
    assert difficulty_from_confidence(0.75) == pytest.approx(1.5) and difficulty_from_confidence(-1.0) == 3.0


def test_people_boxes_are_normalised_for_fusion_and_pixels_again_in_the_result() -> None:
    adapter, kind, outputs = adapter_for("yolo"), get_kind("yolo"), grid_with_one_digit()
    # A majority box where the model saw nothing, a minority box matching the model's 7, a minority stray box.
    reply = box_reply(hub_pb2.REPLY_STATUS_ANSWERED, (2, 30, 14, 46, 1, 1.0), (24, 6, 56, 30, 7, 1 / 3),
                      (0, 0, 8, 8, 4, 1 / 3))
    answers = adapter.fuse_answers(reply, outputs[0], SIZE)
    assert answers is not None and np.all((answers[0][:, :4] >= 0) & (answers[0][:, :4] <= 1))
    fused = kind.fuse(outputs, answers, FusionParams())[0]
    fields = adapter.fused_fields(fused, answers, LABELS, SIZE)
    assert sorted(b.class_id for b in fields["boxes"]) == [1, 7]  # the stray minority box is dropped
    one = next(b for b in fields["boxes"] if b.class_id == 1)
    assert (one.x_min, one.y_min, one.x_max, one.y_max) == pytest.approx((2, 30, 14, 46)) and one.score == 1.0
    assert len(fields["human_boxes"]) == 3 and "answers" not in fields


def test_empty_box_label_means_nothing_there_and_no_label_keeps_the_model() -> None:
    adapter, kind, outputs = adapter_for("yolo"), get_kind("yolo"), grid_with_one_digit()
    answers = adapter.fuse_answers(box_reply(hub_pb2.REPLY_STATUS_PARTIAL), outputs[0], SIZE)
    assert answers is not None and len(kind.fuse(outputs, answers, FusionParams())[0]) == 0
    expired = hub_pb2.SampleReply(sample_id="s-1", status=hub_pb2.REPLY_STATUS_EXPIRED)
    assert adapter.fuse_answers(expired, outputs[0], SIZE) is None
    class_votes = hub_pb2.SampleReply(sample_id="s-1", status=hub_pb2.REPLY_STATUS_ANSWERED,
                                      answers=[hub_pb2.Answer(class_id=3)])
    assert adapter.fuse_answers(class_votes, outputs[0], SIZE) is None  # no box label: the model's boxes stand


def test_people_boxes_of_a_class_the_model_lacks_or_not_finite_are_dropped(caplog) -> None:
    """A reply's box with class 99 of a 10-class model, or a NaN / infinite coordinate or score, reached the fused
    result as a class the model does not have (or a box spanning the frame); only the sound box may remain."""
    adapter, kind, outputs = adapter_for("yolo"), get_kind("yolo"), grid_with_one_digit()
    good = (2, 30, 14, 46, 1, 1.0)
    reply = box_reply(hub_pb2.REPLY_STATUS_ANSWERED, good, (2, 30, 14, 46, 99, 1.0), (2, 30, 14, 46, 10, 1.0),
                      (math.nan, 30, 14, 46, 1, 1.0), (-math.inf, 30, math.inf, 46, 1, 1.0),
                      (2, 30, 14, 46, 1, math.nan), (2, 30, 14, 46, 1, math.inf))
    answers = adapter.fuse_answers(reply, outputs[0], SIZE)
    assert answers is not None and answers[0].shape == (1, 6)
    fields = adapter.fused_fields(kind.fuse(outputs, answers, FusionParams())[0], answers, LABELS, SIZE)
    assert [(b.class_id, b.score) for b in fields["boxes"]] == [(1, 1.0)]
    assert [b.class_id for b in fields["human_boxes"]] == [1]
    late = adapter.late_fields(reply, outputs[0], SIZE, LABELS)
    assert [(b.class_id, b.x_min, b.x_max) for b in late["human_boxes"]] == [(1, 2.0, 14.0)]
    assert "2 aggregated box(es) dropped, with a class id outside 0..9" in caplog.text
    assert "4 aggregated box(es) dropped, with a value not finite" in caplog.text


def test_people_regions_not_finite_are_dropped() -> None:
    kind = get_kind("faster_rcnn")
    outputs = np.zeros((8, 8, kind.output_channels(10)), np.float32)
    regions = [(2, 30, 14, 46, 0.5), (math.nan, 30, 14, 46, 0.5), (-math.inf, 0, math.inf, 46, 0.5),
               (2, 30, 14, 46, math.inf)]
    aggregated = hub_pb2.AggregatedLabel(regions=hub_pb2.RegionList(regions=[
        hub_pb2.Region(x_min=r[0], y_min=r[1], x_max=r[2], y_max=r[3], weight=r[4]) for r in regions]))
    reply = hub_pb2.SampleReply(sample_id="s-1", status=hub_pb2.REPLY_STATUS_ANSWERED, aggregated=aggregated)
    answers = adapter_for("faster_rcnn").fuse_answers(reply, outputs, SIZE)
    assert answers is not None
    np.testing.assert_allclose(answers[0], [[2 / 64, 30 / 48, 14 / 64, 46 / 48, 0.5]])


def test_result_json_round_trips_boxes_and_old_lines_still_load() -> None:
    box = BoxResult(1.5, 2.0, 30.0, 40.25, 7, "7", 0.9)
    result = Result(3, "s-1", 1.0, ResultStatus.FUSED, "escalate", confidence=0.2, boxes=(box,), model_boxes=(),
                    human_boxes=(box, box))
    again = Result.from_dict(json.loads(result.to_json()))
    assert again == result and isinstance(again.boxes[0], BoxResult)
    assert json.loads(result.to_json())["boxes"][0] == {"x_min": 1.5, "y_min": 2.0, "x_max": 30.0, "y_max": 40.25,
                                                        "class_id": 7, "label_name": "7", "score": 0.9}
    old = {"frame_index": 0, "sample_id": "s", "captured_at": 0.0, "status": "model", "decision": "confident",
           "label": 3, "label_name": "3", "model_label": 3, "confidence": 0.9, "answers": [], "final": True}
    loaded = Result.from_dict(old)
    assert loaded.label == 3 and loaded.boxes == loaded.model_boxes == loaded.human_boxes == ()


# --- the agent on a null-engine detector -------------------------------------------------------------------


@pytest.fixture
def detector(tmp_path: Path) -> tuple[Path, Path]:
    keys = make_keys(tmp_path / "keys")
    return null_bundle(tmp_path / "bundle", keys, kind="yolo"), keys.public_pem


def agent_config(tmp: Path, detector: tuple[Path, Path], tau: float) -> AgentConfig:
    frames = tmp / "frames"
    frames.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(frames / f"{i:02d}.png"), rng.integers(0, 256, (SIZE.height, SIZE.width), np.uint8))
    bundle, public = detector
    return parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(public),
                                         "engine_options": {"null": {"output_shape": list(GRID)}}},
        "source": {"kind": "images", "uri": str(frames)}, "gate": {"tau": tau, "audit_share": 0.0},
        "batching": {"size": 8, "max_wait_s": 60, "patience_s": 60},
        "hub": {"url": f"grpc://127.0.0.1:{free_port()}"},  # nobody listens: samples wait in the outbox
        "outbox": {"path": str(tmp / "outbox.sqlite")}})


@contextmanager
def run(config: AgentConfig) -> Iterator[tuple[Agent, list[Result]]]:
    """The agent over the frame folder until the source ends; its results as a list."""
    results: list[Result] = []
    agent = Agent(config, callbacks=[results.append]).start()
    try:
        assert agent.wait(30)
        yield agent, results
    finally:
        agent.stop()


def test_detector_frames_go_to_people_with_boxes_and_fuse_after_a_restart(tmp_path, detector) -> None:
    config = agent_config(tmp_path, detector, tau=1.0)  # every frame is unsure
    with run(config) as (agent, results):
        pending = [r for r in results if r.status is ResultStatus.PENDING]
        assert len(pending) == 4 and all(r.label is None and 0 <= (r.confidence or 0) < 1 for r in pending)
        sample = hub_pb2.Sample.FromString(agent.outbox.get(pending[0].sample_id).payload)
        assert sample.output.kind == hub_pb2.HDNN_KIND_YOLO and not sample.output.class_probabilities
        assert (sample.image.width, sample.image.height) == (SIZE.width, SIZE.height)
        assert len(sample.output.boxes) == len(pending[0].model_boxes)
        reply = box_reply(hub_pb2.REPLY_STATUS_ANSWERED, (8, 6, 40, 30, 3, 1.0))
        reply.sample_id = pending[0].sample_id
        agent._on_reply(reply)
        (fused,) = [r for r in results if r.status is ResultStatus.FUSED]
        assert [(b.class_id, b.label_name) for b in fused.boxes] == [(3, "3")]
        assert (fused.boxes[0].x_min, fused.boxes[0].y_max) == pytest.approx((8, 30), abs=1e-4)
        assert agent.outbox.depth() == 3
    with run(config.model_copy(update={"source": config.source.model_copy(update={"max_frames": 0})})) as (
            agent, results):
        restored = next(iter(agent._waiting.values()))
        assert restored.logits.shape == GRID[1:] and restored.size == SIZE
        reply = box_reply(hub_pb2.REPLY_STATUS_ANSWERED, (4, 4, 20, 20, 5, 2 / 3))
        reply.sample_id = restored.result.sample_id
        agent._on_reply(reply)
        (fused,) = [r for r in results if r.status is ResultStatus.FUSED]
        assert [b.class_id for b in fused.boxes] == [5] and fused.human_boxes == fused.boxes


def test_a_letterboxed_detectors_waiting_samples_keep_their_placement_across_a_restart(tmp_path) -> None:
    keys = make_keys(tmp_path / "keys")
    detector = null_bundle(tmp_path / "bundle", keys, kind="yolo", resize="letterbox"), keys.public_pem
    config = agent_config(tmp_path, detector, tau=1.0)
    placed = FrameSize.of(SIZE.width, SIZE.height, InputSpec(shape=(1, 28, 28, 1), resize="letterbox")).placed
    assert placed != (0.0, 0.0, 1.0, 1.0)
    with run(config) as (agent, _):
        assert {w.size.placed for w in agent._waiting.values()} == {placed}
    with run(config.model_copy(update={"source": config.source.model_copy(update={"max_frames": 0})})) as (
            agent, _):
        assert {w.size for w in agent._waiting.values()} == {FrameSize(SIZE.width, SIZE.height, placed)}


def test_confident_detector_frames_keep_the_model_boxes(tmp_path, detector) -> None:
    with run(agent_config(tmp_path, detector, tau=0.0)) as (agent, results):
        assert [r.status for r in results] == [ResultStatus.MODEL] * 4 and agent.outbox.depth() == 0
        assert all(r.boxes == r.model_boxes and r.label is None for r in results)


def test_health_check_reads_a_grid_and_refuses_a_wrong_one(detector) -> None:
    bundle, public = detector
    config = parse_agent_config({"device_id": "d", "bundle": {"path": str(bundle), "public_key": str(public),
                                 "engine_options": {"null": {"output_shape": list(GRID)}}},
                                 "source": {"kind": "images", "uri": "."}})
    wrong = config.bundle.model_copy(update={"engine_options": {"null": {"output_shape": [1, 3, 3, 15]}}})
    slot = ModelSlot(load_model(bundle, config.bundle), SwapConfig(min_agreement=0.5))
    same, bad = load_model(bundle, config.bundle), load_model(bundle, wrong)
    try:
        slot.health_check(same)  # a grid of the manifest's shape, finite, the same answers as the running model
        with pytest.raises(HealthCheckError, match="shape"):
            slot.health_check(bad)
    finally:
        for model in (same, bad):
            model.close()
        slot.close()


def test_late_reply_reports_people_boxes_but_keeps_the_model_boxes(tmp_path, detector) -> None:
    agent = Agent(agent_config(tmp_path, detector, tau=1.0))
    try:
        model_box = BoxResult(24.0, 6.0, 56.0, 30.0, 7, "7", 0.99)
        timed_out = Result(0, "s-1", 0.0, ResultStatus.TIMEOUT, "escalate", confidence=0.3, boxes=(model_box,),
                           model_boxes=(model_box,))
        waiting = Waiting(timed_out, grid_with_one_digit()[0], "yolo", FusionParams(), float("inf"), timed_out=True,
                          size=SIZE)
        late = agent._late(waiting, box_reply(hub_pb2.REPLY_STATUS_ANSWERED, (2, 30, 14, 46, 1, 1.0)))
        assert late.status is ResultStatus.LATE and late.boxes == (model_box,)
        assert [(b.class_id, b.x_min, b.y_max) for b in late.human_boxes] == [(1, pytest.approx(2), pytest.approx(46))]
    finally:
        agent.stop()


def test_a_letterboxed_models_box_wholly_in_the_padding_is_no_box_of_the_frame() -> None:
    size = FrameSize.of(64, 48, InputSpec(shape=(1, 32, 32, 3), resize="letterbox"))  # padding: y < 0.125
    found = box_results(np.array([[0.2, 0.0, 0.4, 0.1], [0.2, 0.1, 0.4, 0.5]]), np.array([1, 2]), np.array([0.9, 0.8]),
                        LABELS, size)
    assert [b.class_id for b in found] == [2]  # the first had no area left once clipped to the frame
