"""Where a single-file bundle's members are extracted while it is loaded, and what a killed process left there.

`LoadedBundle.close` removes its folder, but a process killed with SIGKILL, by the OOM killer or by a power cut on a
device whose /tmp is on its SD card cannot. A supervisor restarting such an agent for months would fill the disk
one bundle at a time. So each folder carries its owner's pid, and `remove_orphans` deletes the folders whose
process is gone; the agent calls it when it starts. Agents in containers that share one temp folder but not their
pid namespace would see each other's processes as ended: give each container its own /tmp (Docker's default).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

PREFIX = "hgen-bundle-"

log = logging.getLogger(__name__)


def plain_file(member: tarfile.TarInfo) -> bool:
    """A plain file member: `isfile()` also admits GNU sparse members, whose few stored bytes expand to any size."""
    return member.type in (tarfile.REGTYPE, tarfile.AREGTYPE)


def new_folder() -> Path:
    """A private temp folder named after this process (`hgen-bundle-<pid>-<random>`)."""
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))


def _owner_pid(folder: Path) -> int | None:
    pid, dash, _ = folder.name.removeprefix(PREFIX).partition("-")
    return int(pid) if dash and pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_orphans(root: Path | None = None) -> list[Path]:
    """Delete this user's extraction folders under `root` (default: the temp folder) whose process has ended.

    Folders of running processes, of other users and without a pid in their name are left alone."""
    if os.name != "posix":
        return []
    base = Path(root or tempfile.gettempdir())
    removed = []
    for folder in sorted(base.glob(f"{PREFIX}*")):
        pid = _owner_pid(folder)
        if pid is None or _running(pid) or not folder.is_dir() or folder.stat().st_uid != os.getuid():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        log.info("removed %d bundle folder(s) left by ended processes under %s", len(removed), base)
    return removed
