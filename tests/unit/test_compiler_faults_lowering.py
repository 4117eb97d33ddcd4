"""A TVM export that is not what it claims (not ELF, a corrupt or non-ELF object archive) is a typed lowering error
naming the file, so `hgen lower` reports it instead of dying with a ValueError or TarError traceback."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from hgen.compiler.errors import CompilerError, LoweringError
from hgen.compiler.lowering.tvm_relax import library_machine
from hgen.runtime.bundle.elf import NotElfError, elf_machine_of_bytes
from hgen.runtime.errors import HGenRuntimeError

# The first 20 bytes of a little-endian x86_64 ELF header (e_machine 0x3E at offset 18).
X86_64_HEADER = b"\x7fELF\x02\x01\x01" + bytes(11) + b"\x3e\x00"


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_not_elf_is_a_runtime_error_and_still_a_value_error() -> None:
    with pytest.raises(NotElfError) as caught:
        elf_machine_of_bytes(b"#!/bin/sh\n")
    assert isinstance(caught.value, HGenRuntimeError) and isinstance(caught.value, ValueError)


def test_machine_of_a_real_elf_header_and_archive(tmp_path: Path) -> None:
    library = tmp_path / "lib.so"
    library.write_bytes(X86_64_HEADER + bytes(44))
    assert library_machine(library, "shared-library") == "x86_64"
    archive = _tar(tmp_path / "lib.tar", {"a.o": X86_64_HEADER, "b.o": X86_64_HEADER})
    assert library_machine(archive, "object-archive") == "x86_64"


def test_a_shared_library_that_is_not_elf_names_the_file(tmp_path: Path) -> None:
    library = tmp_path / "lib.so"
    library.write_text("not a library")
    with pytest.raises(LoweringError, match=r"lib\.so.*not an ELF file") as caught:
        library_machine(library, "shared-library")
    assert isinstance(caught.value, CompilerError)


def test_a_missing_export_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(LoweringError, match=r"missing\.so"):
        library_machine(tmp_path / "missing.so", "shared-library")


def test_a_corrupt_object_archive_names_the_file(tmp_path: Path) -> None:
    archive = tmp_path / "lib.tar"
    archive.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(LoweringError, match=r"lib\.tar"):
        library_machine(archive, "object-archive")


def test_an_archive_member_that_is_not_elf_names_the_file(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "lib.tar", {"a.o": X86_64_HEADER, "notes.txt": b"hello"})
    with pytest.raises(LoweringError, match=r"lib\.tar.*not an ELF file"):
        library_machine(archive, "object-archive")
