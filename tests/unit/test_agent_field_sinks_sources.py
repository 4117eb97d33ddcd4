"""Field faults of the result sinks and frame sources (review of a deployed device): the `mqtt` sink's memory is
bounded while its broker is away, the `jsonl` file is bounded and follows logrotate without a broken line or a
result written twice after a restart, a camera that stays away fails the run (exit 1, so systemd restarts it)
while a video file's end is still exit 0, and a camera's uri is checked when agent.yaml is read."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from hgen.edge_agent import cli
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import SourceConfig, parse_agent_config
from hgen.edge_agent.errors import AgentConfigError, SourceError
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks import mqtt as mqtt_sink
from hgen.edge_agent.sinks.jsonl import JsonlSink, JsonlSinkConfig
from hgen.edge_agent.sinks.mqtt import MqttSink, MqttSinkConfig
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.sources.camera import CameraSource
from hgen.edge_agent.testing import make_keys, null_bundle, restartable_broker, write_video
from hgen.hub.testing.services import free_port, wait_until
from hgen.protos import hub_pb2


def result(i: int, status: ResultStatus = ResultStatus.MODEL) -> Result:
    return Result(i, str(uuid.uuid4()), 0.0, status, "confident", label=1)


def frame(i: int) -> Frame:
    return Frame(i, np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), time.time())


@pytest.fixture
def kit(tmp_path: Path) -> dict[str, Any]:
    """agent.yaml's required part, for a null bundle (no engine to load) and an images source."""
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys)
    (tmp_path / "images").mkdir()
    return {"device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
            "source": {"kind": "images", "uri": str(tmp_path / "images")},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")}}


@pytest.fixture
def make_agent(kit: dict[str, Any]) -> Iterator:
    agents: list[Agent] = []

    def make(**extra: object) -> Agent:
        agents.append(Agent(parse_agent_config(kit | extra)))
        return agents[-1]

    yield make
    for agent in agents:
        agent.stop()


# --- 5: the mqtt sink's queue is bounded ---------------------------------------------------------------------


def emit_counting_refusals(sink: MqttSink, count: int) -> int:
    refused = 0
    for i in range(count):
        try:
            sink.emit(result(i))
        except mqtt_sink.SinkQueueFullError:
            refused += 1
    return refused


def test_the_mqtt_sink_keeps_at_most_max_queued_results_while_its_broker_is_away() -> None:
    """paho's default bound is none: 40,000 results were 83 MB. The default keeps 1,000 and refuses the rest, at
    once (the pipeline thread never waits for a broker)."""
    sink = MqttSink(MqttSinkConfig(kind="mqtt", url=f"mqtt://127.0.0.1:{free_port()}", topic="results"))
    try:
        assert emit_counting_refusals(sink, 1100) == 100
        assert len(sink.client._out_messages) == 1000 == sink.max_queued
    finally:
        sink.close()


def test_an_agent_counts_what_its_mqtt_sink_refuses_and_goes_on(make_agent) -> None:
    agent = make_agent(sinks=[{"kind": "mqtt", "url": f"mqtt://127.0.0.1:{free_port()}", "topic": "r",
                               "max_queued": 3}])
    results = [agent.process_frame(frame(i)) for i in range(5)]
    assert [r.frame_index for r in results] == list(range(5))
    assert agent.telemetry.count("sink_errors") == 2
    assert "3 results already wait for the broker" in agent.telemetry.problems["sink"]


def test_a_final_result_the_mqtt_sink_refuses_leaves_the_outbox_journal(make_agent) -> None:
    """A result the bounded sink refuses is dropped for good (counted), not kept in the outbox's journal of results
    to re-deliver: that journal grew with every answered sample while the broker was away, and a restart loaded it
    all at once."""
    agent = make_agent(sinks=[{"kind": "mqtt", "url": f"mqtt://127.0.0.1:{free_port()}", "topic": "r",
                               "max_queued": 1}], gate={"tau": 1.0, "audit_share": 0.0},
                       hub={"url": f"grpc://127.0.0.1:{free_port()}"})
    pending = [agent.process_frame(frame(i)) for i in range(3)]  # the first fills the queue
    for result in pending:
        answers = [hub_pb2.Answer(annotator_id=f"p{i}", class_id=1) for i in range(3)]
        agent._on_reply(hub_pb2.SampleReply(sample_id=result.sample_id, status=hub_pb2.REPLY_STATUS_ANSWERED,
                                            answers=answers))
    assert agent.telemetry.count("fused") == 3 and agent.telemetry.count("sink_errors") == 5
    assert agent.outbox.unemitted() == []


def test_the_results_kept_reach_the_broker_when_it_is_back(mosquitto_required: str) -> None:
    """The bound refuses only past max_queued: those kept are sent once the broker is back, and the sink takes
    results again."""
    with restartable_broker() as broker:
        password = broker.add_account("sink", ["write results"])
        broker.stop()
        sink = MqttSink(MqttSinkConfig(kind="mqtt", url=broker.url, topic="results", username="sink",
                                       password=password, max_queued=5))
        try:
            assert emit_counting_refusals(sink, 8) == 3
            broker.start()
            assert wait_until(lambda: not sink.client._out_messages, 30), "the kept results were never acknowledged"
            sink.emit(result(9))
        finally:
            sink.close()
        assert not sink.client._out_messages


# --- 6: the jsonl file is bounded and follows logrotate ------------------------------------------------------


def jsonl(path: Path, **extra: object) -> JsonlSink:
    return JsonlSink(JsonlSinkConfig(kind="jsonl", path=path, **extra))


def rows(path: Path) -> list[dict[str, Any]]:
    """Every line of the file, each one whole JSON (a broken line fails here)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_jsonl_sink_follows_its_path_after_logrotate_renames_or_deletes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    sink = jsonl(path)
    first, second, third = result(0), result(1), result(2)
    sink.emit(first)
    path.rename(tmp_path / "results.jsonl.1")  # logrotate's default (create) mode
    sink.emit(second)
    assert [r["sample_id"] for r in rows(path)] == [second.sample_id]
    assert [r["sample_id"] for r in rows(tmp_path / "results.jsonl.1")] == [first.sample_id]
    path.unlink()
    sink.emit(third)
    sink.close()
    assert [r["sample_id"] for r in rows(path)] == [third.sample_id]


def test_the_jsonl_sink_rotates_by_size_keeping_keep_files_of_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    sink = jsonl(path, max_bytes=1024, keep=2)
    emitted = [result(i) for i in range(20)]
    for item in emitted:
        sink.emit(item)
    sink.close()
    files = [path, tmp_path / "results.jsonl.1", tmp_path / "results.jsonl.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)  # .3 was deleted
    assert all(0 < p.stat().st_size <= 1024 for p in files)
    kept = [r["sample_id"] for p in reversed(files) for r in rows(p)]  # oldest file first
    assert kept == [r.sample_id for r in emitted[-len(kept):]]


def test_a_file_past_max_bytes_before_rotation_existed_is_kept_aside_not_rotated_away(tmp_path: Path) -> None:
    """An agent upgraded onto a results file of its whole history: rotating that file would delete it `keep`
    rotations later; it is kept aside once, under a name the rotation never touches."""
    path = tmp_path / "results.jsonl"
    history = "".join(result(i).to_json() + "\n" for i in range(40))
    path.write_text(history)
    sink = jsonl(path, max_bytes=1024, keep=1)
    for i in range(40, 80):
        sink.emit(result(i))
    sink.close()
    (aside,) = tmp_path.glob("results.jsonl.kept-*")
    assert aside.read_text() == history
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["results.jsonl", "results.jsonl.1", aside.name])


def test_a_line_longer_than_max_bytes_is_written_whole_in_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    sink = jsonl(path, max_bytes=1024)
    long = Result(1, "s-long", 0.0, ResultStatus.MODEL, "confident", label=1, detail="x" * 3000)
    for item in (result(0), long, result(2)):
        sink.emit(item)
    sink.close()
    assert [r["sample_id"] for r in rows(tmp_path / "results.jsonl.1")] == ["s-long"]
    assert len(rows(path)) == len(rows(tmp_path / "results.jsonl.2")) == 1


@pytest.mark.parametrize("rotate", ["by size", "by logrotate"])
def test_a_restart_right_after_a_rotation_still_knows_what_the_file_holds(tmp_path: Path, rotate: str) -> None:
    """`holds` reads the last lines written; just after a rotation they are in results.jsonl.1, so reading only
    the new (short or empty) file would write a journalled result a second time."""
    path = tmp_path / "results.jsonl"
    max_bytes = 1024 if rotate == "by size" else None
    sink = jsonl(path, max_bytes=max_bytes)
    written = [result(i, ResultStatus.FUSED) for i in range(4)]
    for item in written:
        sink.emit(item)
    sink.close()
    if rotate == "by logrotate":
        path.rename(tmp_path / "results.jsonl.1")
    assert (tmp_path / "results.jsonl.1").exists()
    restarted = jsonl(path, max_bytes=max_bytes)
    try:
        assert restarted.holds(written[-2]) and restarted.holds(written[-1])
        assert not restarted.holds(result(9, ResultStatus.FUSED))
    finally:
        restarted.close()


def test_an_agent_s_jsonl_sink_follows_logrotate(make_agent, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    agent = make_agent(sinks=[{"kind": "jsonl", "path": str(path)}])
    agent.process_frame(frame(0))
    path.rename(tmp_path / "r.jsonl.1")
    agent.process_frame(frame(1))
    assert [r["frame_index"] for r in rows(path)] == [1] and agent.telemetry.count("sink_errors") == 0


# --- 8: a live source that gives up fails the run ------------------------------------------------------------


CAMERA_GONE = {"kind": "camera", "uri": "7", "reconnect_attempts": 1, "reconnect_initial_s": 0.05}


@pytest.mark.parametrize("prefetch", [0, 4])
def test_a_camera_that_stays_away_fails_the_run_naming_the_source_and_its_attempts(make_agent, prefetch) -> None:
    agent = make_agent(source=CAMERA_GONE | {"prefetch": prefetch})
    with pytest.raises(SourceError, match=r"camera source '7' gone after 2 failed reopen attempts "
                                          r"\(source\.reconnect_attempts: 1\)"):
        agent.run()


def run_cli(kit: dict[str, Any], folder: Path, **extra: object) -> int:
    """`hgen-agent run` in this process; the signal handlers it installs are put back afterwards."""
    config = folder / "agent.yaml"
    config.write_text(yaml.safe_dump(kit | extra))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return cli.main(["run", "--config", str(config)])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_the_cli_exits_1_for_a_camera_that_stays_away_and_0_at_a_video_s_end(kit, tmp_path: Path) -> None:
    """systemd's Restart=on-failure restarts exit 1, not exit 0 (the end of a file, which must not loop)."""
    assert run_cli(kit, tmp_path, source=CAMERA_GONE) == cli.EXIT_FAILURE
    video = write_video(tmp_path / "clip.avi", 3)
    assert run_cli(kit, tmp_path, source={"kind": "video", "uri": str(video)}) == cli.EXIT_OK


# --- 9: a camera's uri is checked with agent.yaml ------------------------------------------------------------


@pytest.mark.parametrize("uri", ["0", "12", "-1", " 0", "/dev/video0", "/dev/v4l/by-id/usb-Logitech_C920-video-index0",
                                 "/dev/v4l/by-path/platform-fd500000.pcie-usb-0:1.2:1.0-video-index0"])
def test_a_camera_is_an_index_or_a_v4l2_device_path(uri: str) -> None:
    assert CameraSource.uri_problem(uri) is None
    assert parse_agent_config({"device_id": "c", "bundle": {"path": "b", "public_key": "k"},
                               "source": {"kind": "camera", "uri": uri}}).source.uri == uri


@pytest.mark.parametrize("uri", ["cam0", "video0", "/dev/video", "/dev/sda1", "/srv/clip.mp4", "0.5", ""])
def test_any_other_camera_uri_is_a_config_error_naming_source_uri(uri: str) -> None:
    with pytest.raises(AgentConfigError, match=r"source\.uri.*device index such as '0'"):
        parse_agent_config({"device_id": "c", "bundle": {"path": "b", "public_key": "k"},
                            "source": {"kind": "camera", "uri": uri}})


class RecordingCapture:
    """cv2.VideoCapture as the source calls it (no camera on this machine): records what it was asked to open."""

    opened: ClassVar[list[tuple[object, int]]] = []

    def __init__(self, target: object, api: int) -> None:
        self.opened.append((target, api))

    def isOpened(self) -> bool:
        return False

    def release(self) -> None:
        pass


def test_a_device_path_is_opened_by_name_through_v4l2_and_an_index_as_before(monkeypatch) -> None:
    import cv2

    monkeypatch.setattr(cv2, "VideoCapture", RecordingCapture)
    RecordingCapture.opened = []
    for uri in ("/dev/video0", "0"):
        CameraSource(SourceConfig(kind="camera", uri=uri), threading.Event()).close()
    assert RecordingCapture.opened == [("/dev/video0", cv2.CAP_V4L2), (0, cv2.CAP_ANY)]
