"""How bundle files are read safely, where a single-file bundle's members are extracted while it is loaded, and
what a killed process left there.

Reading: an archive's tar headers are walked here before `tarfile` parses them (`check_tar_headers`), and a bundle
folder's files are opened only if they are regular files (`open_regular`), so an unsigned file cannot make the
device allocate or read without bound before its signature is checked.

`LoadedBundle.close` removes its folder, but a process killed with SIGKILL, by the OOM killer or by a power cut on a
device whose /tmp is on its SD card cannot. A supervisor restarting such an agent for months would fill the disk
one bundle at a time. So each folder carries its owner's pid, and `remove_orphans` deletes the folders whose
process is gone; the agent calls it when it starts. Agents in containers that share one temp folder but not their
pid namespace would see each other's processes as ended: give each container its own /tmp (Docker's default).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, BinaryIO

from hgen.runtime.bundle.errors import BundleFormatError

PREFIX = "hgen-bundle-"
MAX_EXTENDED_HEADER = 1 << 14  # a pax header of a few names and times; tarfile reads it whole into memory
PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")  # tarfile's own record pattern, so both see the same keywords
REFUSED_KEYWORDS = (b"size", b"GNU.", b"hdrcharset")  # pax records the header walk could not follow (`_pax_path`)
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)  # a FIFO must not block open

log = logging.getLogger(__name__)


def plain_file(member: tarfile.TarInfo) -> bool:
    """A plain file member: `isfile()` also admits GNU sparse members, whose few stored bytes expand to any size."""
    return member.type in (tarfile.REGTYPE, tarfile.AREGTYPE)


def _pax_path(payload: bytes) -> str | None:
    """The `path` record of a pax header: the next member's name, as tarfile reads it (records split as tarfile
    splits them). Records the walk could not follow are refused: `size` moves the next header, GNU sparse maps are
    read into memory without bound, and `hdrcharset` or a path that is not UTF-8 could name the member otherwise."""
    path, pos = None, 0
    while (match := PAX_RECORD.match(payload, pos)) and (length := int(match[1])) > 0:
        if match[2].startswith(REFUSED_KEYWORDS):
            raise BundleFormatError(f"archive has a pax header setting {match[2].decode(errors='replace')!r}: "
                                    "bundle archives hold plain files only; repack it with `hgen bundle pack`")
        if match[2] == b"path":
            try:
                path = payload[match.end(2) + 1 : match.start(1) + length - 1].decode("utf-8")
            except UnicodeDecodeError:
                raise BundleFormatError("archive has a member name that is not UTF-8") from None
        pos += length
    return path


def check_tar_headers(stream: IO[bytes], limits: Mapping[str, int]) -> None:
    """Walk the tar headers `tarfile` is about to parse, before it does, from the stream's current position.

    `tarfile` reads a pax or GNU long-name header's whole payload into memory: a 200 KB gzip archive made it
    allocate 600 MB while the loader still looked for the manifest. Here a member must be a regular file after at
    most one pax header of at most MAX_EXTENDED_HEADER bytes. `limits` maps the members the caller expects to the
    most bytes each may hold; only those are read past, so the walk costs no more than they do (an unsigned archive
    cannot make the device decompress gigabytes). It returns at the first other member, one larger than its limit or
    seen twice, which the caller then refuses from its header alone, and where tarfile's own reading would stop
    (a zero or invalid block; tarfile reports truncation itself)."""
    remaining, extended, path = dict(limits), False, None
    while len(block := stream.read(tarfile.BLOCKSIZE)) == tarfile.BLOCKSIZE:
        try:
            header = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")  # parses this block only
        except tarfile.HeaderError:
            return
        if header.size < 0:  # base-256 sizes can be negative: tarfile would step back and read members forever
            raise BundleFormatError(f"archive member '{header.name}' has a negative size")
        padded = -(-header.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if header.type == tarfile.XHDTYPE and not extended:
            if header.size > MAX_EXTENDED_HEADER:
                raise BundleFormatError(f"archive has a {header.size}-byte pax header (at most {MAX_EXTENDED_HEADER} "
                                        "are read before the files are checked): not a bundle archive")
            path = _pax_path(stream.read(header.size))
            stream.seek(padded - header.size, io.SEEK_CUR)
            extended = True
            continue
        if not plain_file(header):  # a link, folder, device, sparse file, GNU long name, global or second pax header
            raise BundleFormatError(f"archive member '{header.name}' is not a plain file (tar type {header.type!r})")
        if header.size > remaining.pop(path or header.name, -1):
            return
        stream.seek(padded, io.SEEK_CUR)
        extended, path = False, None


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file (symlinks followed), else a typed BundleFormatError.

    A folder raised IsADirectoryError; a FIFO blocked `open`; /dev/zero was hashed forever. The file is checked
    after it is opened (fstat), so it cannot be swapped between the check and the read."""
    try:
        fd = os.open(path, READ_FLAGS)
    except FileNotFoundError:
        raise BundleFormatError(f"bundle file {path} is missing") from None
    except OSError as exc:
        raise BundleFormatError(f"cannot read bundle file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleFormatError(f"bundle file {path} is not a regular file (a folder, device or pipe); "
                                "a bundle holds plain files only")
    return os.fdopen(fd, "rb")


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
