"""An agent that cannot be built or started releases what it already holds: the bundle archive's temp folder, the
outbox database, the sinks already open. A device supervisor that retries a bad config for months must not fill
/tmp or run out of file handles; before, each refused attempt left an `hgen-bundle-*` folder behind."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hgen.compiler.bundle import pack_bundle
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError, SourceError
from hgen.edge_agent.sinks import open_sinks
from hgen.edge_agent.testing import make_keys, null_bundle

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from hgen.edge_agent.testing import TestKeys


def open_fds() -> set[str]:
    """The process's open file descriptors, after a collection: objects earlier tests left to the garbage collector
    close theirs now rather than in the middle of a test (an fd that vanished there is not this test's business)."""
    gc.collect()
    return set(os.listdir("/proc/self/fd"))


def assert_none_left_open(before: set[str], message: str = "") -> None:
    """Nothing the code under test opened is still open (other threads of the test process may close theirs)."""
    left = open_fds() - before
    assert not left, f"left open: {sorted(left)} {message}"


@pytest.fixture
def keys(tmp_path: Path) -> TestKeys:
    return make_keys(tmp_path / "keys")


def agent_data(tmp: Path, keys: TestKeys, **extra: Any) -> dict[str, Any]:
    """A signed single-file bundle (so loading it extracts into a temp folder) and a file source."""
    archive = pack_bundle(null_bundle(tmp / "null", keys), tmp / "net.hgb")
    return {"device_id": "cam-1", "bundle": {"path": str(archive), "public_key": str(keys.public_pem)},
            "source": {"kind": "video", "uri": str(tmp / "missing.mp4")},
            "outbox": {"path": str(tmp / "outbox.sqlite")}} | extra


def test_a_sink_that_fails_to_open_closes_the_sinks_opened_before_it(tmp_path: Path) -> None:
    config = parse_agent_config(agent_data(tmp_path, make_keys(tmp_path / "k"), sinks=[
        {"kind": "jsonl", "path": str(tmp_path / "results.jsonl")},
        {"kind": "jsonl", "path": str(tmp_path)}]))  # a folder: the second sink cannot open it
    before = open_fds()
    with pytest.raises(AgentConfigError) as refused:  # naming the path
        open_sinks(config.sinks)
    assert_none_left_open(before, "(an open sink was left to the garbage collector)")
    del refused  # held until here: its traceback keeps the half-built list alive, as a caller logging it would
    assert (tmp_path / "results.jsonl").exists()  # the first one was opened, then closed


def test_an_agent_refused_while_it_is_built_leaves_no_temp_folder_or_open_file(
        tmp_path: Path, temp_root: Path, keys: TestKeys) -> None:
    data = agent_data(tmp_path, keys, sinks=[{"kind": "jsonl", "path": str(tmp_path / "results.jsonl")},
                                             {"kind": "jsonl", "path": str(tmp_path)}])
    config = parse_agent_config(data)
    before = open_fds()
    with pytest.raises(AgentConfigError):
        Agent(config)  # the bundle, the outbox and the first sink are open when the second sink fails
    assert list(temp_root.iterdir()) == []
    assert_none_left_open(before)


def test_an_agent_that_cannot_start_releases_all_it_holds(tmp_path: Path, temp_root: Path, keys: TestKeys) -> None:
    config = parse_agent_config(agent_data(tmp_path, keys))
    before = open_fds()
    agent = Agent(config)
    assert len(list(temp_root.iterdir())) == 1  # the archive's extracted files, while the agent lives
    with pytest.raises(SourceError, match="missing.mp4"):
        agent.start()
    assert list(temp_root.iterdir()) == []
    assert_none_left_open(before)
    agent.stop()  # already stopped: nothing left to do, nothing raised
