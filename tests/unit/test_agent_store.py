"""A restarted agent comes back on the bundle it was running (the model the field taught), offline too, unless the
operator flashed another bundle since or the stored copy no longer verifies; the store keeps only the bundles the
agent holds. Null-engine bundles; the swaps go through the agent's own slot, as an update notice's would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

from hgen.compiler.bundle import pack_bundle
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.cli import check
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.store import POINTER
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.runtime.bundle import BundleFormatError

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from hgen.edge_agent.testing import TestKeys


@pytest.fixture
def keys(tmp_path: Path) -> TestKeys:
    return make_keys(tmp_path / "keys")


def archive(tmp: Path, keys: TestKeys, version: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return pack_bundle(null_bundle(tmp / f"build-{version}", keys, version=version), dest)


@contextmanager
def agent(tmp: Path, keys: TestKeys, **bundle: Any) -> Iterator[Agent]:
    """An agent built on the store (not started: the tests switch models themselves), stopped afterwards."""
    (tmp / "frames").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp / "frames" / "0.png"), np.zeros((28, 28), np.uint8))
    built = Agent(parse_agent_config({
        "device_id": "cam-1", "source": {"kind": "images", "uri": str(tmp / "frames")},
        "bundle": {"path": str(tmp / "flash" / "net.hgb"), "public_key": str(keys.public_pem),
                   "store_dir": str(tmp / "store"), **bundle},
        "outbox": {"path": str(tmp / "outbox.sqlite")}}))
    try:
        yield built
    finally:
        built.stop()


def swap(running: Agent, tmp: Path, keys: TestKeys, version: str) -> Path:
    """What an update notice does: the download lands in the store, is verified, staged, switched in."""
    path = archive(tmp, keys, version, tmp / "store" / f"null-net-{version}.hgb")
    running.swap_to(path)
    running.slot.maybe_switch()
    running.store.flush()  # the record of this swap is written before the next download lands in the store
    return path


@pytest.fixture
def flashed(tmp_path: Path, keys: TestKeys) -> Path:
    return archive(tmp_path, keys, "0.1.0", tmp_path / "flash" / "net.hgb")


def test_a_restart_resumes_the_bundle_swapped_in_and_the_store_keeps_only_held_bundles(
        tmp_path: Path, keys: TestKeys, flashed: Path) -> None:
    with agent(tmp_path, keys) as first:
        (tmp_path / "store").mkdir(exist_ok=True)
        (tmp_path / "store" / "null-net-0.9.0.part").write_bytes(b"cut off by a power loss")
        for version in ("0.2.0", "0.3.0", "0.4.0"):
            swap(first, tmp_path, keys, version)
        assert first.model.version == "0.4.0"
    stored = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert stored == [POINTER, "null-net-0.3.0.hgb", "null-net-0.4.0.hgb"]  # running + previous; 0.2.0 and the
    # partial download deleted
    assert json.loads((tmp_path / "store" / POINTER).read_text())["version"] == "0.4.0"
    assert check(first.config)["resumes"] == str((tmp_path / "store" / "null-net-0.4.0.hgb").resolve())
    with agent(tmp_path, keys) as second:  # no hub configured: the device resumes offline
        assert second.model.version == "0.4.0" and "bundle" not in second.telemetry.problems
    assert flashed.exists()  # the flashed bundle is never pruned
    with agent(tmp_path, keys, resume=False) as third:
        assert third.model.version == "0.1.0"


def test_a_bundle_flashed_since_is_started_not_the_recorded_one(tmp_path: Path, keys: TestKeys, flashed: Path) -> None:
    with agent(tmp_path, keys) as first:
        swap(first, tmp_path, keys, "0.2.0")
    archive(tmp_path, keys, "1.0.0", flashed)  # the operator flashes a new compile at the same path
    with agent(tmp_path, keys) as second:
        assert second.model.version == "1.0.0"


def test_a_stored_bundle_that_no_longer_verifies_falls_back_to_the_flashed_one_and_says_so(
        tmp_path: Path, keys: TestKeys, flashed: Path) -> None:
    with agent(tmp_path, keys) as first:
        stored = swap(first, tmp_path, keys, "0.2.0")
    stored.write_bytes(stored.read_bytes()[:-100])  # the card corrupted it
    with agent(tmp_path, keys) as second:
        assert second.model.version == "0.1.0"
        assert "could not resume null-net-0.2.0.hgb" in second.telemetry.problems["bundle"]
    (tmp_path / "store" / POINTER).write_text("{not json")
    with agent(tmp_path, keys) as third:  # an unreadable record is ignored
        assert third.model.version == "0.1.0"


def test_a_bundle_rolled_back_at_run_time_is_not_resumed(tmp_path: Path, keys: TestKeys, flashed: Path) -> None:
    with agent(tmp_path, keys) as first:
        swap(first, tmp_path, keys, "0.2.0")

        def broken(batch: np.ndarray) -> np.ndarray:
            raise RuntimeError("delegate failed")

        first.model.engine.run = broken  # type: ignore[method-assign]
        model, _ = first.slot.infer(np.zeros((1, 28, 28, 1), np.float32))
        assert model.version == "0.1.0"
    assert not (tmp_path / "store" / POINTER).exists()  # back on the flashed bundle: nothing to resume
    with agent(tmp_path, keys) as second:
        assert second.model.version == "0.1.0"


def test_a_missing_flashed_bundle_is_named_even_with_a_record(tmp_path: Path, keys: TestKeys, flashed: Path) -> None:
    with agent(tmp_path, keys) as first:
        swap(first, tmp_path, keys, "0.2.0")
    flashed.unlink()  # the record cannot be judged against it: start from it, and say it is missing
    with pytest.raises(BundleFormatError, match="does not exist"), agent(tmp_path, keys):
        pass
