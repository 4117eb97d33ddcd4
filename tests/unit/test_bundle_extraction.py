"""An archive's extracted files live in a folder named after the loading process: closing removes it, and what a
killed process left behind is removed by the next agent, while live processes' folders are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from hgen.compiler.bundle import pack_bundle
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.runtime.bundle import load_bundle
from hgen.runtime.bundle.extraction import remove_orphans


def ended_pid() -> int:
    """The pid of a process that has exited (waited for, so the pid is free)."""
    run = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                         check=True)
    return int(run.stdout)


def folder(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "model.null").write_bytes(b"x")
    return path


def test_a_loaded_archive_extracts_into_a_folder_named_after_this_process(tmp_path: Path, temp_root: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    archive = pack_bundle(null_bundle(tmp_path / "null", keys), tmp_path / "net.hgb")
    with load_bundle(archive, trusted_public_key=keys.public_pem) as loaded:
        assert loaded.root.parent == temp_root and loaded.root.name.startswith(f"hgen-bundle-{os.getpid()}-")
        assert remove_orphans() == []  # this process is running: its folder stays
        assert loaded.root.is_dir()
    assert list(temp_root.iterdir()) == []


def test_only_folders_of_ended_processes_are_removed(temp_root: Path) -> None:
    dead = folder(temp_root, f"hgen-bundle-{ended_pid()}-abc123")
    live = folder(temp_root, f"hgen-bundle-{os.getpid()}-def456")
    unnamed = folder(temp_root, "hgen-bundle-q1w2e3r4")  # an older agent's name: no pid to judge by
    other = folder(temp_root, "someone-else")
    assert remove_orphans() == [dead]
    assert not dead.exists() and live.is_dir() and unnamed.is_dir() and other.is_dir()
