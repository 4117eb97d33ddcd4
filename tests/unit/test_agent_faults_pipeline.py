"""A pipeline that dies is a failure the process reports (null engine): a source failing mid-stream is raised from
`Agent.run` after the orderly stop, and `hgen-agent run` exits 1 (a supervisor restarts it), while a config problem
still exits 2 (a restart cannot fix it)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hgen.edge_agent.agent import Agent
from hgen.edge_agent.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from hgen.edge_agent.cli import main as cli_main
from hgen.edge_agent.config import load_agent_config
from hgen.edge_agent.errors import SourceError
from hgen.edge_agent.testing import make_keys, null_bundle

SIZE = 28


def y4m(path: Path, good_frames: int, broken: bool) -> Path:
    """A grey YUV4MPEG2 file; `broken` adds a line where the next FRAME marker should be (a corrupt recording)."""
    data = f"YUV4MPEG2 W{SIZE} H{SIZE} F30:1 Cmono\n".encode()
    for i in range(good_frames):
        data += b"FRAME\n" + bytes([i * 40 % 256]) * (SIZE * SIZE)
    path.write_bytes(data + (b"NOT A FRAME\n" if broken else b""))
    return path


def config_file(tmp_path: Path, source: Path) -> Path:
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys)
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nbundle: {{path: {bundle}, public_key: {keys.public_pem}}}\n"
                    f"source: {{kind: y4m, uri: {source}, prefetch: 0}}\n"
                    f"outbox: {{path: {tmp_path / 'outbox.sqlite'}}}\n")
    return path


def test_a_source_failing_mid_stream_is_raised_by_run_after_the_stop(tmp_path: Path) -> None:
    agent = Agent(load_agent_config(config_file(tmp_path, y4m(tmp_path / "cut.y4m", 2, broken=True))))
    with pytest.raises(SourceError, match="no FRAME marker"):
        agent.run()
    assert agent.telemetry.count("frames") == 2  # the frames before the fault were answered
    assert "no FRAME marker" in agent.telemetry.problems["pipeline"]
    assert agent._stopped and agent.outbox.depth() == 0  # stopped in order: the outbox file is closed


def test_hgen_agent_run_exits_1_when_the_source_fails_and_0_when_it_ends(tmp_path: Path, capsys) -> None:
    broken = config_file(tmp_path / "a", y4m(_made(tmp_path / "a") / "cut.y4m", 2, broken=True))
    assert cli_main(["run", "--config", str(broken), "--log-level", "ERROR"]) == EXIT_FAILURE
    assert "no FRAME marker" in capsys.readouterr().err
    whole = config_file(tmp_path / "b", y4m(_made(tmp_path / "b") / "whole.y4m", 2, broken=False))
    assert cli_main(["run", "--config", str(whole), "--log-level", "ERROR"]) == EXIT_OK


def test_a_config_problem_still_exits_2(tmp_path: Path, capsys) -> None:
    path = config_file(tmp_path, y4m(tmp_path / "whole.y4m", 1, broken=False))
    path.write_text(path.read_text().replace("kind: y4m", "kind: y4n"))
    assert cli_main(["check", "--config", str(path)]) == EXIT_CONFIG
    assert "source.kind" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["y4m", "video", "images"])
def test_a_source_that_names_nothing_exits_2_not_1(kind: str, tmp_path: Path, capsys) -> None:
    """A wrong source.uri exited 1, so the unit (Restart=, RestartPreventExitStatus=2) retried it every 5 s."""
    path = config_file(tmp_path, tmp_path / "no-such-file")
    path.write_text(path.read_text().replace("kind: y4m", f"kind: {kind}"))
    assert cli_main(["check", "--config", str(path)]) == EXIT_CONFIG
    assert cli_main(["run", "--config", str(path), "--log-level", "ERROR"]) == EXIT_CONFIG
    assert "no-such-file" in capsys.readouterr().err


def test_hub_tls_files_are_taken_beside_agent_yaml_and_a_missing_one_is_exit_2(tmp_path: Path, capsys,
                                                                              monkeypatch) -> None:
    """Kits write `keys/device.pem`: it was read from the working directory, and `run` from / ended in a
    FileNotFoundError traceback (`check` said nothing)."""
    path = config_file(tmp_path, y4m(tmp_path / "whole.y4m", 1, broken=False))
    path.write_text(path.read_text() + "hub: {url: 'grpcs://127.0.0.1:1', secret: 'x' , tls: {ca_file: keys/ca.pem, "
                                       "cert_file: keys/device.pem, key_file: keys/device.key}}\n")
    monkeypatch.chdir("/")
    tls = load_agent_config(path).hub.tls
    assert tls is not None and tls.cert_file == tmp_path / "keys" / "device.pem"
    assert cli_main(["check", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"hub.tls.ca_file: {tmp_path / 'keys' / 'ca.pem'} is not a readable file" in err and "Traceback" not in err
    for name in ("ca.pem", "device.pem", "device.key"):
        (tmp_path / "keys" / name).write_text("not PEM")
    assert cli_main(["check", "--config", str(path)]) == EXIT_CONFIG
    assert "do not load as PEM certificates and key" in capsys.readouterr().err


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def asking_agent(tmp_path: Path, hub_url: str, secret: str) -> Path:
    """An agent.yaml: two frames, every one sent to people (tau 1), replies awaited for an hour."""
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys, tau=1.0)
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nbundle: {{path: {bundle}, public_key: {keys.public_pem}}}\n"
                    f"source: {{kind: y4m, uri: {y4m(tmp_path / 'two.y4m', 2, broken=False)}, prefetch: 0}}\n"
                    f"outbox: {{path: {tmp_path / 'outbox.sqlite'}}}\n"
                    f"hub: {{url: '{hub_url}', secret: {secret}}}\n"
                    "batching: {size: 1, patience_s: 3600}\n")
    return path


def test_a_stop_ends_the_wait_for_replies_at_once(tmp_path: Path) -> None:
    """SIGTERM after a file source ended: `run` waited out `patience_s` (here an hour) for replies before stopping,
    longer than a supervisor waits before it kills. The wait now ends on `stop`. The hub is a port nobody listens
    on, so no reply ever comes; tau 1 sends every frame to people."""
    from hgen.hub.testing.services import free_port

    agent = Agent(load_agent_config(asking_agent(tmp_path, f"grpc://127.0.0.1:{free_port()}", "s3cret"))).start()
    assert agent.wait(60)  # the source ended; two samples wait for people
    settled: list[bool] = []
    waiter = threading.Thread(target=lambda: settled.append(agent.wait_settled(3600)), daemon=True)
    waiter.start()
    stopper = threading.Thread(target=agent.stop)  # as the signal handler does
    stopper.start()
    agent.stop()  # as `run` does after the wait: returns once the handler's stop has closed everything
    assert agent._closed.is_set()
    waiter.join(60)
    assert not waiter.is_alive() and settled == [False]  # ended by the stop, not by an hour passing
    stopper.join(60)


def test_a_refused_secret_is_logged_with_what_to_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong secret used to log only "Submit of 2 samples failed: StatusCode.PERMISSION_DENIED"."""
    import logging

    from hgen.edge_agent.testing import start_hub, wait_agent

    hub = start_hub(tmp_path / "hub.db", ["cam-1"])
    try:
        path = asking_agent(tmp_path, hub.grpc_url, "not-the-issued-one")
        with caplog.at_level(logging.WARNING), Agent(load_agent_config(path)) as agent:
            assert wait_agent(agent, lambda: "PERMISSION_DENIED" in caplog.text, 60)  # the link's state moved
    finally:
        hub.stop()
    line = next(r.getMessage() for r in caplog.records if "PERMISSION_DENIED" in r.getMessage())
    assert f"to {hub.grpc_url} failed: PERMISSION_DENIED" in line and "check device_id and hub.secret" in line
