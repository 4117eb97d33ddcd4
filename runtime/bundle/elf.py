"""Read the machine type of ELF files (and of object archives) without running `file` or loading them.

Used at compile time to record what a TVM library was built for, and on the device to refuse a library
for another CPU before `dlopen` (which would fail with an opaque loader message, or worse).
"""

from __future__ import annotations

import platform
import struct
import tarfile
from pathlib import Path

from hgen.runtime.errors import HGenRuntimeError

# e_machine values from the ELF specification.
ELF_MACHINES = {0x03: "x86", 0x28: "arm", 0x3E: "x86_64", 0xB7: "aarch64", 0xF3: "riscv"}
_HOST_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "arm", "armv8l": "arm", "armv6l": "arm"}


class NotElfError(HGenRuntimeError, ValueError):
    """The bytes are not an ELF file (a ValueError too, for callers that caught it as one)."""


def elf_machine_of_bytes(header: bytes) -> str:
    """Machine name from the first 20 bytes of an ELF file."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise NotElfError("not an ELF file")
    byte_order = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(byte_order + "H", header[18:20])
    return ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")


def elf_machine(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return elf_machine_of_bytes(handle.read(20))


def archive_machines(path: str | Path) -> set[str]:
    """Machine types of every object file in a tar of objects (TVM's export when it cannot link)."""
    machines: set[str] = set()
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            if member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    machines.add(elf_machine_of_bytes(handle.read(20)))
    return machines


def host_machine() -> str:
    machine = platform.machine().lower()
    return _HOST_ALIASES.get(machine, machine)
