"""What a reply may change on the device. A reply is not signed: its labour settles the device's labour bucket, so
it is held to what m people can spend (NaN or 1e12 used to switch the labour demand off, or people off for good).
A reply fused after a hot swap is named with the classes of the model that made the sample (people answered those),
not the running one's. Null engine; the hub link is a loopback port nobody listens on (replies are handed over
directly, as the transport would)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.gating import LabourBucket
from hgen.edge_agent.replies import Waiting, reported_labour
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import ResultCollector, make_keys, null_bundle
from hgen.edge_agent.testing import TestKeys as Keys
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2
from hgen.runtime.hdnn import FusionParams


def frame(index: int) -> Frame:
    return Frame(index, np.random.default_rng(index).integers(0, 256, (28, 28), dtype=np.uint8), float(index))


def answered(sample_id: str, class_id: int, labour: float) -> hub_pb2.SampleReply:
    answers = [hub_pb2.Answer(annotator_id=f"p{i}", class_id=class_id) for i in range(3)]
    return hub_pb2.SampleReply(sample_id=sample_id, status=hub_pb2.REPLY_STATUS_ANSWERED, answers=answers,
                               labour=labour)


def agent_on(tmp_path: Path, keys: Keys, bundle: Path, **sections: dict) -> tuple[Agent, ResultCollector]:
    data = {"device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem),
                                             "store_dir": str(tmp_path / "store")},
            "source": {"kind": "images", "uri": str(tmp_path)}, "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "hub": {"url": f"grpc://127.0.0.1:{free_port()}"}, **sections}
    seen = ResultCollector()
    return Agent(parse_agent_config(data), callbacks=[seen]), seen


@pytest.mark.parametrize("labour", [math.nan, math.inf, -5.0, 1e12])
def test_a_replys_labour_is_held_to_what_m_people_can_spend(tmp_path: Path, labour: float) -> None:
    keys = make_keys(tmp_path / "keys")
    agent, seen = agent_on(tmp_path, keys, null_bundle(tmp_path / "b", keys), gate={"tau": 1.0, "audit_share": 0.0},
                           batching={"patience_s": 30, "labour_share": 0.1, "labour_window_frames": 100,
                                     "annotators": 3})
    try:
        for i in range(20):
            agent.process_frame(frame(i))
        first = next(r for r in seen.results if r.status.value == "pending")
        agent._on_reply(answered(first.sample_id, 2, labour))
        assert math.isfinite(agent.labour.tokens) and math.isfinite(agent.labour.ratio())
        assert agent.labour.tokens >= -3 * 3.0  # at worst m x 3 operations charged
        before = len(seen.results)
        for i in range(20, 1020):
            agent.process_frame(frame(i))
        later = Counter(r.status.value for r in seen.results[before:])
        assert later["pending"] > 0  # people are still asked
        assert agent.labour.ratio() <= 0.1 + 0.01  # and the labour demand still holds
    finally:
        agent.stop()


def test_a_reply_after_a_swap_is_named_with_the_classes_of_the_model_that_asked(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    old = tuple(f"old-{c}" for c in "abcdefghij")
    new = tuple(f"new-{c}" for c in "jihgfedcba")
    agent, seen = agent_on(tmp_path, keys, null_bundle(tmp_path / "v1", keys, version="1.0.0", labels=list(old)),
                           gate={"tau": 1.0})
    try:
        pending = agent.process_frame(frame(0))
        agent.swap_to(null_bundle(tmp_path / "v2", keys, version="1.1.0", labels=list(new)))
        agent.process_frame(frame(1))  # the pipeline switches between frames
        assert agent.model.version == "1.1.0"
        agent._on_reply(answered(pending.sample_id, 2, 9.0))
        fused = next(r for r in seen.results if r.sample_id == pending.sample_id and r.status.value == "fused")
        assert (fused.label, fused.label_name, fused.bundle_version) == (2, "old-c", "1.0.0")
    finally:
        agent.stop()


def test_a_reply_after_a_restart_on_a_newer_bundle_is_named_with_the_classes_people_answered(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    old = [f"old-{c}" for c in "abcdefghij"]
    first, _ = agent_on(tmp_path, keys, null_bundle(tmp_path / "v1", keys, version="1.0.0", labels=old),
                        gate={"tau": 1.0})
    try:
        pending = first.process_frame(frame(0))
    finally:
        first.stop()
    newer = null_bundle(tmp_path / "v2", keys, version="1.1.0", labels=[f"new-{c}" for c in "jihgfedcba"])
    cv2.imwrite(str(tmp_path / "frame.png"), frame(1).image)  # the source the restarted agent reads
    second, seen = agent_on(tmp_path, keys, newer, gate={"tau": 1.0})
    try:
        second.start()  # restores the stored sample
        second._on_reply(answered(pending.sample_id, 2, 9.0))
        fused = next(r for r in seen.results if r.sample_id == pending.sample_id and r.status.value == "fused")
        assert (fused.label_name, second.model.version) == ("old-c", "1.1.0")
    finally:
        second.stop()


def test_a_frame_whose_output_is_not_finite_is_invalid_not_a_confident_answer(tmp_path: Path) -> None:
    """NaN confidence compared as confident: the frame's (meaningless) answer stood and nobody was asked. The phone
    makes such a frame invalid too."""
    keys = make_keys(tmp_path / "keys")
    agent, seen = agent_on(tmp_path, keys, null_bundle(tmp_path / "b", keys), gate={"tau": 0.5})
    try:
        infer = agent.slot.infer

        def broken(x: np.ndarray):  # type: ignore[no-untyped-def]
            model, logits = infer(x)
            return model, np.where(np.arange(logits.shape[-1]) == 3, np.nan, logits).astype(logits.dtype)

        agent.slot.infer = broken  # type: ignore[method-assign]  # a model that gives NaN on real frames
        result = agent.process_frame(frame(0))
        assert result.status.value == "invalid" and "not finite" in result.detail
        assert agent.telemetry.snapshot()["outputs_not_finite"] == 1 and agent._waiting == {}
    finally:
        agent.stop()


def test_a_detection_replys_labour_counts_every_box_people_drew() -> None:
    """The hub counts one operation per box: 3 people drawing 8 boxes each spent 24, and a flat 3 x m cap settled 9,
    leaving the device's labour bucket 15 operations too generous per such frame."""
    boxes = hub_pb2.BoxList(boxes=[hub_pb2.Box(class_id=0, x_min=0.1, y_min=0.1, x_max=0.3, y_max=0.3)] * 8)
    reply = hub_pb2.SampleReply(sample_id="s", status=hub_pb2.REPLY_STATUS_ANSWERED, labour=24.0,
                                answers=[hub_pb2.Answer(annotator_id=f"p{i}", boxes=boxes) for i in range(3)])
    waiting = Waiting(Result(0, "s", 0.0, ResultStatus.PENDING, "pending"), np.zeros(4, np.float32), "yolo",
                      FusionParams(), 0.0, labour=6.0, m=3)
    assert reported_labour(reply, waiting) == 24.0
    reply.labour = 1e6  # more than the drawn boxes can cost
    assert reported_labour(reply, waiting) == 24.0
    many = hub_pb2.BoxList(boxes=[hub_pb2.Box(class_id=0, x_min=0.1, y_min=0.1, x_max=0.3, y_max=0.3)] * 5000)
    del reply.answers[:]
    reply.answers.append(hub_pb2.Answer(annotator_id="p0", boxes=many))
    assert reported_labour(reply, waiting) == 100.0  # one answer charges for at most 100 boxes


def test_the_bucket_reserves_what_a_sample_can_cost_so_late_replies_never_overspend() -> None:
    """Samples were reserved at their estimate (scaled by what replies had shown so far): under load replies came
    late, so many samples went out before the scale learned, their excess was charged after the frames that could
    repay it, and `make demo` ended at labour 0.0577 for a budget of 0.05. A class sample now reserves the most m
    people can spend (m x 3 operations), the reply refunding the rest: every reply arriving after the last frame
    still leaves the stream within its budget."""
    rng = np.random.default_rng(0)
    bucket, waiting = LabourBucket(0.05, window_frames=100), []
    for _ in range(5000):
        bucket.frame()
        reserved = bucket.reserve(float(rng.uniform(3.0, 5.0)), 3)  # estimates that run low
        if rng.random() < 0.3 and bucket.take(reserved):
            waiting.append(reserved)
    for reserved in waiting:  # every reply comes after the stream (the worst a loaded machine can do)
        bucket.settle(reserved, float(rng.uniform(6.0, 9.0)))
    assert 0.04 < bucket.ratio() <= 0.05


def test_a_box_sample_reserves_what_people_have_really_been_spending() -> None:
    """Boxes can cost more than m x 3 (one operation per box): the estimate, scaled by what replies showed."""
    bucket = LabourBucket(0.1, window_frames=100)
    assert bucket.reserve(4.0, 3) == 9.0 and bucket.reserve(30.0, 3) == 30.0
    for _ in range(200):  # people spend 1.5 x the estimate
        bucket.settle(bucket.reserve(30.0, 3), 45.0)
    assert bucket.reserve(30.0, 3) == pytest.approx(45.0, rel=0.05)
    for _ in range(200):  # an estimate that runs high is never reserved below itself
        bucket.settle(bucket.reserve(30.0, 3), 20.0)
    assert bucket.reserve(30.0, 3) == 30.0
    bucket.settle(30.0, 0.0)  # nobody answered: says nothing of the ratio
    assert bucket.scale == 1.0


def test_canary_frames_of_another_shape_are_left_out_of_a_health_check(tmp_path: Path) -> None:
    """Right after a swap between variants with other input shapes the canary held both shapes: np.stack raised and
    the next update was rejected for it."""
    keys = make_keys(tmp_path / "keys")
    agent, _ = agent_on(tmp_path, keys, null_bundle(tmp_path / "b", keys), gate={"tau": 0.5})
    try:
        shape = tuple(agent.model.manifest.input.shape[1:])
        agent.slot.observe(np.zeros((8, 8, 3), np.float32))  # the previous variant's input
        agent.slot.observe(np.ones(shape, np.float32))
        inputs = agent.slot.canary_inputs(agent.model)
        assert inputs.shape == (1, *shape) and float(inputs.min()) == 1.0
    finally:
        agent.stop()


class SetClock:
    def __init__(self, wall: float) -> None:
        self.wall = wall

    def monotonic(self) -> float:
        return 1000.0

    def time(self) -> float:
        return self.wall


def test_a_restart_with_the_clock_set_back_keeps_at_most_the_patience(tmp_path: Path) -> None:
    """A Pi without a real-time clock booting a day in the past restored its samples with a day more of patience."""
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "b", keys)
    data = {"device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
            "source": {"kind": "images", "uri": str(tmp_path)}, "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "hub": {"url": f"grpc://127.0.0.1:{free_port()}"}, "gate": {"tau": 1.0}, "batching": {"patience_s": 30}}
    first = Agent(parse_agent_config(data), clock=SetClock(1_800_000_000.0))
    try:
        pending = first.process_frame(frame(0))
    finally:
        first.stop()
    again = Agent(parse_agent_config(data), clock=SetClock(1_800_000_000.0 - 86_400))
    try:
        again._restore()
        assert again._waiting[pending.sample_id].patience_at <= 1000.0 + 30.0
    finally:
        again.stop()


def test_a_labour_bucket_too_small_for_one_sample_is_refused_at_start() -> None:
    """A sample reserves m x 3 operations: a bucket that can never bank that much would send nobody, silently."""
    with pytest.raises(AgentConfigError, match="raise labour_window_frames to at least 1000"):
        parse_agent_config({"device_id": "d", "bundle": {"path": "b", "public_key": "k"}, "source": {"kind": "images",
                            "uri": "."}, "batching": {"labour_share": 0.001, "labour_window_frames": 100}})


def test_a_refusal_for_a_reason_newer_than_the_agent_settles_the_sample(tmp_path: Path) -> None:
    """A newer hub may refuse for a reason this agent's wire enum does not name: the reply used to raise
    ValueError while being taken, so the sample stayed waiting and was asked again for ever."""
    keys = make_keys(tmp_path / "keys")
    agent, seen = agent_on(tmp_path, keys, null_bundle(tmp_path / "b", keys), gate={"tau": 1.0, "audit_share": 0.0})
    try:
        agent.process_frame(frame(0))
        (pending,) = seen.with_status("pending")
        agent._on_reply(hub_pb2.SampleReply(sample_id=pending.sample_id, status=hub_pb2.REPLY_STATUS_REJECTED,
                                            reject_reason=99, detail="over a newer hub's limit"))
        (refused,) = seen.with_status("hub_refused")
        assert refused.sample_id == pending.sample_id
        assert refused.detail == "REPLY_STATUS_REJECTED 99 (unknown to this agent): over a newer hub's limit"
        assert pending.sample_id not in agent._waiting
    finally:
        agent.stop()
