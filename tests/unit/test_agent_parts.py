"""Fast tests of the agent's parts on the `null` engine (no ML package): config, preprocessing, gate, labour
budget, outbox, telemetry, rollback, sources and bad input. Frames come from files written with OpenCV."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.cli import main as cli_main
from hgen.edge_agent.config import AgentConfig, HubConfig, load_agent_config, parse_agent_config
from hgen.edge_agent.errors import AgentConfigError, SourceError
from hgen.edge_agent.gating import Batcher, Decision, Gate, PendingSample
from hgen.edge_agent.model import FrameShapeError, load_model, preprocess
from hgen.edge_agent.outbox import Outbox, OutboxRow
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sources import open_source
from hgen.edge_agent.swap import ModelSlot
from hgen.edge_agent.transports.base import Endpoint, parse_endpoint
from hgen.edge_agent.telemetry import Telemetry, prometheus_text
from hgen.edge_agent.testing import make_keys, null_bundle, write_video
from hgen.runtime.bundle import InputSpec, SignatureError, TargetMismatchError


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, keys) -> Path:
    return null_bundle(tmp_path_factory.mktemp("bundle") / "null", keys, tau=0.2)


def config(tmp: Path, bundle: Path, keys, source: dict, **extra) -> AgentConfig:
    return parse_agent_config({"device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem)},
                               "source": source, "outbox": {"path": str(tmp / "outbox.sqlite")}, **extra})


# --- config --------------------------------------------------------------------------------------------


def test_config_errors_name_every_key_path(bundle, keys) -> None:
    with pytest.raises(AgentConfigError) as info:
        parse_agent_config({"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k", "colour": 1},
                            "source": {"kind": "video", "uri": "v"}, "hub": {"url": "http://x:1"},
                            "batching": {"size": 0}})
    text = str(info.value)
    assert "bundle.colour: unknown key" in text and "hub.url" in text and "batching.size" in text


@pytest.mark.parametrize(("url", "endpoint"), [
    ("grpc://hub:50051", Endpoint("grpc", "hub", 50051, False)),
    ("mqtts://broker:8883", Endpoint("mqtt", "broker", 8883, True)),
    ("http://hub:80", None), ("grpc://hub", None), ("grpc://hub:port", None), ("grpcss://hub:1", None)])
def test_a_hub_url_names_a_registered_transport(url: str, endpoint: Endpoint | None) -> None:
    """The schemes are the transport registry's names (plus `s` for TLS); the config check and the agent's own
    parse agree, and an unknown scheme's error lists the registered ones."""
    if endpoint is not None:
        assert parse_endpoint(url) == endpoint
        assert HubConfig(url=url, tls={} if endpoint.tls else None).url == url
        return
    with pytest.raises(AgentConfigError, match="grpc\\[s\\]://host:port or mqtt\\[s\\]://host:port"):
        parse_endpoint(url)
    with pytest.raises(AgentConfigError, match="hub.url"):
        parse_agent_config({"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k"},
                            "source": {"kind": "video", "uri": "v"}, "hub": {"url": url}})


def test_config_file_paths_are_relative_to_the_file(tmp_path) -> None:
    (tmp_path / "agent.yaml").write_text("device_id: cam-1\nbundle: {path: b.hgb, public_key: k.pub}\n"
                                         "source: {kind: video, uri: v.avi}\n")
    loaded = load_agent_config(tmp_path / "agent.yaml")
    assert loaded.bundle.path == tmp_path / "b.hgb" and Path(loaded.source.uri) == tmp_path / "v.avi"
    assert loaded.outbox.path == tmp_path / "outbox.sqlite"


@pytest.mark.parametrize("uri, resolved", [("frames", True), ("cams/y.y4m", True), ("0", False),
                                           ("rtsp://cam.local:554/live", False), ("/dev/video0", False)])
def test_a_source_uri_is_resolved_against_the_file_only_when_it_names_a_relative_file(tmp_path, uri, resolved):
    (tmp_path / "agent.yaml").write_text("device_id: cam-1\nbundle: {path: b.hgb, public_key: k.pub}\n"
                                         f"source: {{kind: images, uri: '{uri}'}}\n")
    loaded = load_agent_config(tmp_path / "agent.yaml")
    assert loaded.source.uri == (str(tmp_path / uri) if resolved else uri)


# --- preprocessing, gate, labour budget ----------------------------------------------------------------


def test_preprocess_converts_any_frame_to_the_input_spec() -> None:
    spec = InputSpec(shape=(1, 28, 28, 1), scale=1 / 255)
    colour = np.full((64, 48, 3), 255, np.uint8)
    x, resized = preprocess(colour, spec)
    assert x.shape == (28, 28, 1) and resized and np.allclose(x, 1.0)
    x, resized = preprocess(np.zeros((28, 28), np.uint8), spec)
    assert x.shape == (28, 28, 1) and not resized
    with pytest.raises(FrameShapeError):
        preprocess(np.zeros((0, 0), np.uint8), spec)
    with pytest.raises(FrameShapeError):
        preprocess(np.zeros((4, 4, 2), np.uint8), spec)


def test_gate_audits_and_rate_limit() -> None:
    from hgen.edge_agent.config import GateConfig

    gate = Gate(GateConfig(audit_share=0.5, seed=1))
    decisions = [gate.decide(0.99, 0.5, float(i)) for i in range(200)]
    audits = decisions.count(Decision.AUDIT)
    assert 60 < audits < 140 and set(decisions) == {Decision.AUDIT, Decision.CONFIDENT}
    limited = Gate(GateConfig(audit_share=0.0, min_escalation_interval_s=1.0))
    assert [limited.decide(0.1, 0.5, t).value for t in (0.0, 0.5, 1.2)] == ["escalate", "rate_limited", "escalate"]


def test_labour_budget_per_batch() -> None:
    from hgen.edge_agent.config import BatchingConfig

    batcher = Batcher(BatchingConfig(size=10, max_wait_s=1.0, labour_budget=10.0))
    cost = batcher.labour_of(1.5, 3)  # Eq. 3: L0 = d * m = 4.5
    offered = [batcher.offer(PendingSample(str(i), b"", cost), 0.0) for i in range(3)]
    assert offered == [True, True, False]  # 9 fits in L_c = 10, 13.5 does not
    assert not batcher.due(0.5) and batcher.due(1.0)
    assert len(batcher.take().samples) == 2
    assert batcher.offer(PendingSample("3", b"", cost), 2.0)  # a new batch has a fresh budget


# --- outbox ----------------------------------------------------------------------------------------------


def _row(i: int) -> OutboxRow:
    return OutboxRow(f"s{i}", "b", float(i), i, 3, 0.0, b"payload", np.zeros(10, np.float32).tobytes(), "{}")


def test_outbox_survives_reopen_and_deletes_only_on_ack(tmp_path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 100)
    box.put([_row(i) for i in range(5)])
    box.close()
    box = Outbox(tmp_path / "o.sqlite", 100)
    assert [r.sample_id for r in box.pending()] == [f"s{i}" for i in range(5)]
    assert box.ack(["s1", "s3", "unknown"]) == 2
    assert box.depth() == 3 and box.get("s0").payload == b"payload"
    box.close()


@pytest.mark.parametrize("policy, kept", [("drop_oldest", ["s2", "s3", "s4"]), ("drop_newest", ["s0", "s1", "s2"])])
def test_outbox_overflow_policy_is_counted(tmp_path, policy: str, kept: list[str]) -> None:
    box = Outbox(tmp_path / "o.sqlite", 3, policy)
    for i in range(5):
        box.put([_row(i)])
    assert [r.sample_id for r in box.pending()] == kept and box.dropped() == 2
    box.close()


# --- telemetry -------------------------------------------------------------------------------------------


def test_telemetry_percentiles_and_prometheus_text() -> None:
    telemetry = Telemetry(latency_window=100)
    for ms in range(1, 101):
        telemetry.frame(float(ms))
    telemetry.inc("escalated", 10)
    telemetry.problem("hub", 'hub unreachable: "x"')
    snap = telemetry.snapshot()
    assert snap["frames"] == 100 and 50 <= snap["inference_ms_p50"] <= 51 and snap["inference_ms_p99"] >= 99
    text = prometheus_text(snap, telemetry.problems)
    assert "hgen_agent_frames_total 100" in text and "hgen_agent_inference_ms_p99 " in text
    assert 'hgen_agent_problem{component="hub",detail="hub unreachable: \\"x\\""} 1' in text


# --- bundles and rollback ----------------------------------------------------------------------------------


def test_bundle_for_another_target_or_other_key_is_refused(tmp_path, keys, bundle) -> None:
    from hgen.edge_agent.config import BundleConfig

    other = null_bundle(tmp_path / "rpi", keys, target="rpi4")
    with pytest.raises(TargetMismatchError):
        load_model(other, BundleConfig(path=other, public_key=keys.public_pem, expected_target="x86_64"))
    stranger = make_keys(tmp_path / "stranger")
    with pytest.raises(SignatureError):
        load_model(bundle, BundleConfig(path=bundle, public_key=stranger.public_pem))


def test_without_an_engine_named_the_first_that_runs_here_is_used(tmp_path, keys) -> None:
    """A bundle made for several devices lists a TVM library for another machine first. Before, an agent not told
    `bundle.engine` opened every engine and refused the bundle ("built for aarch64")."""
    from hgen.edge_agent.config import BundleConfig

    mixed = null_bundle(tmp_path / "mixed", keys, foreign_first=True)
    model = load_model(mixed, BundleConfig(path=mixed, public_key=keys.public_pem))
    try:
        assert list(model.bundle.engines) == ["null"] and model.bundle.manifest.engines[0].name == "tvm"
        assert model.engine.run(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
    finally:
        model.close()
    with pytest.raises(TargetMismatchError, match=r"is built for (aarch64|x86_64)"):  # asked for by name: refused
        load_model(mixed, BundleConfig(path=mixed, public_key=keys.public_pem, engine="tvm"))


def test_a_bundle_with_no_engine_that_runs_here_says_why_and_a_bad_option_is_not_skipped(tmp_path, keys) -> None:
    from hgen.runtime import signing
    from hgen.runtime.bundle import load_first_runnable
    from hgen.runtime.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest
    from hgen.runtime.errors import InvalidInputError

    mixed = null_bundle(tmp_path / "mixed", keys, foreign_first=True)
    with pytest.raises(InvalidInputError, match="input_shape"):  # the operator's mistake, not "cannot run here"
        load_first_runnable(mixed, trusted_public_key=keys.public_pem, engine_options={"null": {"input_shape": [0]}})
    manifest = Manifest.model_validate_json((mixed / MANIFEST_NAME).read_bytes())
    data = manifest.model_copy(update={"engines": manifest.engines[:1]}).to_bytes()  # the foreign library only
    (mixed / MANIFEST_NAME).write_bytes(data)
    (mixed / SIGNATURE_NAME).write_bytes(signing.sign(data, signing.load_private_key(keys.private_pem)))
    with pytest.raises(TargetMismatchError, match=r"no engine of bundle null-net runs on this device \(tvm: "):
        load_first_runnable(mixed, trusted_public_key=keys.public_pem)


def test_runtime_error_after_a_swap_rolls_back_and_reruns_the_frame(tmp_path, keys, bundle) -> None:
    from hgen.edge_agent.config import BundleConfig, SwapConfig

    bundle_config = BundleConfig(path=bundle, public_key=keys.public_pem)
    slot = ModelSlot(load_model(bundle, bundle_config), SwapConfig(probation_frames=5))
    candidate = slot.prepare(null_bundle(tmp_path / "v2", keys, version="0.2.0"), bundle_config, tau=None, m=None)
    slot.stage(candidate)
    slot.maybe_switch()
    assert slot.active.version == "0.2.0"

    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("delegate failed")

    candidate.engine.run = broken  # the new model starts failing at run time
    model, logits = slot.infer(np.zeros((1, 28, 28, 1), np.float32))
    assert model.version == "0.1.0" and logits.shape == (1, 10)
    assert slot.active.version == "0.1.0" and "0.2.0" in slot.rejected_versions
    slot.close()


def test_a_candidate_staged_after_the_slot_closed_is_closed_not_kept(tmp_path, keys, bundle) -> None:
    """A swap thread finishing its load after the agent's stop staged a model nobody would close again."""
    from hgen.edge_agent.config import BundleConfig, SwapConfig

    bundle_config = BundleConfig(path=bundle, public_key=keys.public_pem)
    slot = ModelSlot(load_model(bundle, bundle_config), SwapConfig())
    candidate = slot.prepare(null_bundle(tmp_path / "v2", keys, version="0.2.0"), bundle_config, tau=None, m=None)
    slot.close()
    assert candidate.bundle.engines and not slot.stage(candidate)
    assert not candidate.bundle.engines and not slot.staged and slot.maybe_switch() is None


# --- sources and bad input ---------------------------------------------------------------------------------


def test_image_folder_with_wrong_sizes_and_a_corrupt_file(tmp_path, keys, bundle) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((28, 28), np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.zeros((120, 90, 3), np.uint8))  # wrong size and colour
    (folder / "c.png").write_bytes(b"not a png")  # undecodable
    cv2.imwrite(str(folder / "d.png"), np.zeros((5, 5, 4), np.uint8))  # BGRA, tiny
    results: list[Result] = []
    jsonl = tmp_path / "results.jsonl"
    cfg = config(tmp_path, bundle, keys, {"kind": "images", "uri": str(folder)},
                 sinks=[{"kind": "jsonl", "path": str(jsonl)}])
    with Agent(cfg, callbacks=[results.append]) as agent:
        assert agent.wait(10)
        snap = agent.telemetry.snapshot()
        assert "frames" in agent.telemetry.problems
    assert [r.status for r in results] == [ResultStatus.MODEL, ResultStatus.MODEL, ResultStatus.INVALID,
                                           ResultStatus.MODEL]
    assert snap["frames_invalid"] == 1 and snap["frames_resized"] == 2 and snap["frames"] == 4
    assert len(jsonl.read_text().splitlines()) == 4


def test_standalone_video_every_frame_has_a_result_and_metrics_endpoint(tmp_path, keys, bundle) -> None:
    video = write_video(tmp_path / "v.avi", 60)
    results: list[Result] = []
    cfg = config(tmp_path, bundle, keys, {"kind": "video", "uri": str(video)},
                 telemetry={"prometheus_port": 0})
    with Agent(cfg, callbacks=[results.append]) as agent:
        assert agent.wait(20)
        body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_endpoint.port}/metrics", timeout=5).read()
    assert [r.frame_index for r in results] == list(range(60)) and all(r.final for r in results)
    assert b"hgen_agent_frames_total 60" in body


def test_a_stream_that_vanishes_is_reopened_with_back_off(tmp_path) -> None:
    """A `url` source on a file that disappears and comes back (OpenCV opens both the same way); the
    source reports the problem while it is gone and resumes reading when it returns."""
    from hgen.edge_agent.config import SourceConfig

    video = write_video(tmp_path / "stream.avi", 5)
    hidden = tmp_path / "hidden.avi"
    stop = threading.Event()
    # prefetch 0: the reader thread would read ahead past frame 5 and report the next drop before we look
    source = open_source(SourceConfig(kind="url", uri=str(video), reconnect_initial_s=0.05, reconnect_max_s=0.2,
                                      prefetch=0),
                         stop)
    assert [source.read().index for _ in range(5)] == list(range(5))
    video.rename(hidden)  # the stream ends and cannot be reopened
    while_gone: list[tuple[int, str]] = []

    def restore() -> None:
        """Bring the file back after two failed reopens, or after a deadline (so `read` below never hangs)."""
        deadline = time.monotonic() + 30
        while source.stats.failed_opens < 2 and time.monotonic() < deadline:
            stop.wait(0.02)
        while_gone.append((source.stats.failed_opens, source.stats.problem))
        hidden.rename(video)

    helper = threading.Thread(target=restore)
    helper.start()
    frame = source.read()
    helper.join(30)
    failed_opens, problem = while_gone[0]
    assert failed_opens >= 2 and "reconnecting" in problem
    assert frame is not None and frame.index == 5
    assert source.stats.reconnects == 1 and source.stats.problem == ""
    source.close()


def test_missing_camera_gives_up_after_the_configured_attempts(tmp_path) -> None:
    from hgen.edge_agent.config import SourceConfig

    source = open_source(SourceConfig(kind="camera", uri="57", reconnect_initial_s=0.01, reconnect_attempts=2))
    with pytest.raises(SourceError, match="gone after 3 failed reopen attempts"):  # the run fails: exit 1, restarted
        source.read()
    assert "gone" in source.stats.problem
    with pytest.raises(SourceError):
        open_source(SourceConfig(kind="video", uri=str(tmp_path / "missing.avi")))


# --- CLI -----------------------------------------------------------------------------------------------------


def test_cli_check_and_errors(tmp_path, keys, bundle, capsys) -> None:
    video = write_video(tmp_path / "v.avi", 3)
    good = tmp_path / "agent.yaml"
    good.write_text(f"device_id: cam-1\nbundle: {{path: {bundle}, public_key: {keys.public_pem}, "
                    f"expected_target: x86_64}}\nsource: {{kind: video, uri: {video}}}\n")
    assert cli_main(["check", "--config", str(good)]) == 0
    assert '"bundle": "null-net 0.1.0"' in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text() + "gate: {tau: 2}\n")
    assert cli_main(["check", "--config", str(bad)]) == 2
    assert "gate.tau" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text(good.read_text().replace("x86_64", "rpi4"))
    assert cli_main(["check", "--config", str(other)]) == 2
    assert "rpi4" in capsys.readouterr().err
    assert cli_main(["run", "--config", str(good), "--log-level", "ERROR"]) == 0
    assert '"frames": 3.0' in capsys.readouterr().out


def test_cli_check_opens_a_file_source_but_not_a_live_camera(tmp_path, keys, bundle, capsys) -> None:
    """check proves a file source opens (a missing file is an error) and leaves live kinds alone: a camera that is
    not plugged in yet would otherwise make check wait in back-off."""
    head = f"device_id: cam-1\nbundle: {{path: {bundle}, public_key: {keys.public_pem}}}\n"
    missing = tmp_path / "missing.yaml"
    missing.write_text(head + f"source: {{kind: video, uri: {tmp_path / 'nowhere.avi'}}}\n")
    assert cli_main(["check", "--config", str(missing)]) != 0
    assert "nowhere.avi" in capsys.readouterr().err
    camera = tmp_path / "camera.yaml"
    camera.write_text(head + "source: {kind: camera, uri: '7'}\n")
    assert cli_main(["check", "--config", str(camera)]) == 0
    assert "\"source\": \"camera 7 (live: not opened here; `run` retries it until it opens)\"" in capsys.readouterr().out


def test_cli_check_refuses_another_devices_outbox_as_run_does_without_touching_it(tmp_path, keys, bundle,
                                                                                  capsys) -> None:
    """check passed a config whose outbox.path another device owned, and run then refused it; check must neither
    create the file nor claim it."""
    from hgen.edge_agent.outbox import Outbox

    video = write_video(tmp_path / "v.avi", 3)
    outbox = tmp_path / "outbox.sqlite"
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: cam-2\nbundle: {{path: {bundle}, public_key: {keys.public_pem}}}\n"
                      f"source: {{kind: video, uri: {video}}}\noutbox: {{path: {outbox}}}\n")
    assert cli_main(["check", "--config", str(config)]) == 0
    assert f'"outbox": "{outbox} (new)"' in capsys.readouterr().out and not outbox.exists()
    Outbox(outbox, 10, device_id="cam-1").close()
    before = outbox.read_bytes()
    assert cli_main(["check", "--config", str(config)]) == 2
    assert "holds the samples of device 'cam-1', not 'cam-2'" in capsys.readouterr().err
    assert outbox.read_bytes() == before
    config.write_text(config.read_text().replace("cam-2", "cam-1"))
    assert cli_main(["check", "--config", str(config)]) == 0
    assert f'"outbox": "{outbox} (0 sample(s) waiting)"' in capsys.readouterr().out


def test_cli_check_reports_a_damaged_outbox_that_run_moves_aside_and_leaves_it(tmp_path, keys, bundle,
                                                                                capsys) -> None:
    """`run` moves a damaged outbox aside and starts afresh, so check reports it instead of failing (exit 1); check
    itself moves nothing."""
    from hgen.edge_agent.outbox import Outbox

    video = write_video(tmp_path / "v.avi", 3)
    outbox = tmp_path / "outbox.sqlite"
    config = tmp_path / "agent.yaml"
    config.write_text(f"device_id: cam-1\nbundle: {{path: {bundle}, public_key: {keys.public_pem}}}\n"
                      f"source: {{kind: video, uri: {video}}}\noutbox: {{path: {outbox}}}\n")
    Outbox(outbox, 10, device_id="cam-1").close()
    damaged = b"\x00" * 100 + outbox.read_bytes()[100:]
    outbox.write_bytes(damaged)
    assert cli_main(["check", "--config", str(config)]) == 0
    assert "(damaged: `run` moves it aside to outbox.sqlite.corrupt-<UTC time>" in capsys.readouterr().out
    assert outbox.read_bytes() == damaged and not list(tmp_path.glob("*.corrupt-*"))
