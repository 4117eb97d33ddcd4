"""An update notice is not signed, so the agent follows it only for a newer version of the model it runs, with a
plain name and a semantic version, and runs the download only if its signed manifest is what the notice announced.
A notice naming `../../elsewhere/x` used to write, then delete, files outside the bundle store; an older signed
version, or another model signed with the same key, used to be swapped in.

The transport is a stand-in with only `fetch_bundle` (the test says so): it hands over an archive as a download
would; what is checked is the agent's own code, on the null engine."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgen.compiler.bundle.archive import pack_bundle
from hgen.edge_agent import updates
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import DownloadError, SwapError
from hgen.edge_agent.testing import TestKeys as Keys
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.protos import hub_pb2


class Download:
    """Stands in for the hub link: each fetch hands over `archive` where the agent asked for it."""

    def __init__(self) -> None:
        self.archive: Path | None = None
        self.asked: list[Path] = []

    def fetch_bundle(self, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
        assert self.archive is not None
        self.asked.append(dest)
        shutil.copyfile(self.archive, dest)
        return dest

    def watch(self, bundle_name: str, known_version: str) -> None:
        """Called after a swap: nothing to follow here."""


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys")


@pytest.fixture
def agent(tmp_path: Path, keys: Keys) -> Iterator[Agent]:
    bundle = null_bundle(tmp_path / "v1", keys, version="1.2.0")
    config = parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(keys.public_pem),
                                         "store_dir": str(tmp_path / "store")},
        "source": {"kind": "images", "uri": str(tmp_path)}, "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    running = Agent(config)
    running.transport = Download()  # type: ignore[assignment]
    yield running
    running.transport = None
    running.stop()


def archive(tmp_path: Path, keys: Keys, name: str, version: str) -> Path:
    folder = null_bundle(tmp_path / f"{name}-{version}", keys, name=name, version=version)
    return pack_bundle(folder, tmp_path / f"{name}-{version}.packed")


def test_a_notice_with_a_path_in_its_name_touches_no_file(agent: Agent, tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere" / "precious-1.0.0.hgb"
    victim.parent.mkdir()
    victim.write_text("important")
    agent._on_update(hub_pb2.ModelUpdate(bundle_name="../../elsewhere/precious", version="1.0.0"))
    agent._on_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="../../x"))
    assert victim.read_text() == "important" and agent.transport.asked == []  # type: ignore[union-attr]
    assert agent.telemetry.count("swaps_rejected") == 2
    assert "the notice names an invalid bundle 'null-net' '../../x'" in agent.telemetry.problems["swap"]


def test_an_older_version_is_not_fetched_and_another_model_is_not_swapped_in(agent: Agent, tmp_path: Path,
                                                                             keys: Keys) -> None:
    download: Download = agent.transport  # type: ignore[assignment]
    download.archive = archive(tmp_path, keys, "null-net", "1.1.0")
    agent._on_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="1.1.0"))  # older: ignored, not fetched
    assert download.asked == [] and agent.telemetry.count("swaps_rejected") == 0
    download.archive = archive(tmp_path, keys, "other-net", "2.0.0")  # signed with the same key
    agent._apply_update(hub_pb2.ModelUpdate(bundle_name="null-net-rpi4", version="2.0.0"))
    assert agent.model.version == "1.2.0" and agent.telemetry.count("swaps_rejected") == 1
    assert "signed as other-net 2.0.0, not as null-net 2.0.0" in agent.telemetry.problems["swap"]


def test_a_download_signed_as_another_version_than_announced_is_refused_and_deleted(
        agent: Agent, tmp_path: Path, keys: Keys) -> None:
    download: Download = agent.transport  # type: ignore[assignment]
    download.archive = archive(tmp_path, keys, "null-net", "1.0.0")  # an old signed bundle, announced as new
    agent._apply_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0"))
    assert agent.model.version == "1.2.0" and agent.telemetry.count("swaps_rejected") == 1
    assert "signed as null-net 1.0.0, not as null-net 1.3.0 (the running model, the announced version)" in agent.telemetry.problems["swap"]
    assert not (tmp_path / "store" / "null-net-1.3.0.hgb").exists()
    download.archive = archive(tmp_path, keys, "null-net", "1.3.0")
    agent._apply_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0"))
    agent.slot.maybe_switch()
    assert agent.model.version == "1.3.0"


class BrokenOnce(Download):
    """The first fetch breaks off half way (a partial file, as a dropped link leaves), later ones succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched = threading.Event()

    def fetch_bundle(self, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
        if not self.asked:
            self.asked.append(dest)
            dest.write_bytes(b"half a bundle")
            raise DownloadError("bundle download failed after 5 attempts: UNAVAILABLE: Socket closed")
        result = super().fetch_bundle(notice, dest)
        self.fetched.set()
        return result


def join_swaps() -> None:
    for thread in threading.enumerate():
        if thread.name == "agent-swap":
            thread.join(timeout=60)


def test_a_download_that_broke_off_is_followed_again_when_the_notice_comes_again(agent: Agent, tmp_path: Path,
                                                                                keys: Keys) -> None:
    """The version was marked seen before the download and never unmarked: one dropped link left the device on
    the old model until it restarted, although a reconnect re-sends the notice."""
    download = BrokenOnce()
    download.archive = archive(tmp_path, keys, "null-net", "1.3.0")
    agent.transport = download  # type: ignore[assignment]
    notice = hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0")
    agent._on_update(notice)
    join_swaps()
    assert agent.telemetry.count("swaps_rejected") == 1 and not list((tmp_path / "store").glob("*.part"))
    agent._on_update(notice)  # the hub sends it again after a reconnect
    join_swaps()
    agent.slot.maybe_switch()
    assert agent.model.version == "1.3.0" and len(download.asked) == 2


def test_a_download_that_broke_off_is_tried_again_after_a_back_off(agent: Agent, tmp_path: Path, keys: Keys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(updates, "RETRY_FIRST_S", 0.0)
    download = BrokenOnce()
    download.archive = archive(tmp_path, keys, "null-net", "1.3.0")
    agent.transport = download  # type: ignore[assignment]
    agent._on_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0"))  # never sent again
    assert download.fetched.wait(timeout=60)
    join_swaps()
    agent.slot.maybe_switch()
    assert agent.model.version == "1.3.0"


def test_a_refused_download_is_not_followed_again(agent: Agent, tmp_path: Path, keys: Keys) -> None:
    download: Download = agent.transport  # type: ignore[assignment]
    download.archive = archive(tmp_path, keys, "null-net", "1.0.0")  # signed as an older version
    notice = hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0")
    agent._on_update(notice)
    join_swaps()
    agent._on_update(notice)
    join_swaps()
    assert len(download.asked) == 1 and agent.telemetry.count("swaps_rejected") == 1


def test_a_refused_download_leaves_no_partial_file(agent: Agent, tmp_path: Path) -> None:
    class Refused(Download):
        def fetch_bundle(self, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
            dest.write_bytes(b"the first chunk")
            raise SwapError("the hub refused the download: PERMISSION_DENIED")

    agent.transport = Refused()  # type: ignore[assignment]
    agent._apply_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0"))
    assert agent.telemetry.count("swaps_rejected") == 1 and list((tmp_path / "store").iterdir()) == []


def test_a_download_is_flushed_to_the_card_before_it_is_named_and_run(agent: Agent, tmp_path: Path, keys: Keys,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut just after a hot swap must not leave the store's archive (and `current.json`) empty: each is
    fsynced, then renamed, then its folder fsynced (the rename), before the agent goes on."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(self: Path, target: Path) -> Path:
        events.append(("rename", f"{self.name} -> {Path(target).name}"))
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    agent.transport.archive = archive(tmp_path, keys, "null-net", "1.3.0")  # type: ignore[union-attr]
    agent._apply_update(hub_pb2.ModelUpdate(bundle_name="null-net", version="1.3.0"))
    agent.slot.maybe_switch()  # the frame loop's switch, then the record of the swap
    agent.store.flush()
    assert agent.model.version == "1.3.0"
    store = str((tmp_path / "store").resolve())
    download = events.index(("fsync", f"{store}/null-net-1.3.0.part"))
    assert events[download + 1:download + 3] == [("rename", "null-net-1.3.0.part -> null-net-1.3.0.hgb"),
                                                  ("fsync", store)]
    pointer = events.index(("rename", "current.tmp -> current.json"))
    assert events[pointer - 1][0] == "fsync" and events[pointer - 1][1].endswith("current.tmp")
    assert events[pointer + 1] == ("fsync", store)
