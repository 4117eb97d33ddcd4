"""Verify-then-load on the device: signature first, then target, then file hashes, then engines.

Order matters: the manifest's signature is checked on its raw bytes before JSON parsing, the target
is checked before any file is hashed or extracted, and every model file's SHA-256 is checked before an
interpreter or `dlopen` sees it. Archives are read member by member, never extracted blindly.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tarfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import hgen.runtime.engines as engines_pkg
from hgen.runtime.bundle import extraction
from hgen.runtime.bundle.elf import host_machine
from hgen.runtime.bundle.errors import BundleFormatError, IntegrityError, TargetMismatchError
from hgen.runtime.bundle.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    EngineEntry,
    Manifest,
    WebModelEntry,
    parse_manifest,
)
from hgen.runtime.errors import UnknownChoiceError
from hgen.runtime.signing import load_public_key, verify

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 1 << 20
CHUNK = 1 << 16


@dataclass
class LoadedBundle:
    """A verified bundle and its opened engines (first = preferred). Close it to remove extracted files."""

    manifest: Manifest
    root: Path
    engines: dict[str, engines_pkg.Engine]
    _tempdir: str | None = field(default=None, repr=False)

    @property
    def engine(self) -> engines_pkg.Engine:
        return next(iter(self.engines.values()))

    def close(self) -> None:
        self.engines.clear()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> LoadedBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_limited(handle: IO[bytes], what: str) -> bytes:
    data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleFormatError(f"{what} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def _verified_manifest(manifest_bytes: bytes, signature: bytes, key: Any, expected_target: str | None) -> Manifest:
    verify(manifest_bytes, signature, key)  # raises SignatureError / UntrustedKeyError
    manifest = parse_manifest(manifest_bytes)
    if expected_target is not None and manifest.target != expected_target:
        raise TargetMismatchError(f"bundle is built for target '{manifest.target}', this device is '{expected_target}'")
    return manifest


def _copy_hashed(source: IO[bytes], dest: Path | None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    out = open(dest, "wb") if dest is not None else None
    try:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest(), size


def _check_hash(entry: EngineEntry | WebModelEntry, sha256: str, size: int) -> None:
    if size != entry.size or sha256 != entry.sha256:
        raise IntegrityError(
            f"{entry.file}: size/SHA-256 {size}/{sha256[:12]} differ from the signed manifest "
            f"{entry.size}/{entry.sha256[:12]}: the file was modified"
        )


def verify_directory(root: Path, key: Any, expected_target: str | None = None) -> Manifest:
    """Verify a bundle directory in place and return its manifest."""
    try:
        with open(root / MANIFEST_NAME, "rb") as handle:
            manifest_bytes = _read_limited(handle, MANIFEST_NAME)
        signature = (root / SIGNATURE_NAME).read_bytes()[:4096]
    except FileNotFoundError as exc:
        raise BundleFormatError(f"bundle {root} has no {Path(exc.filename).name}") from None
    manifest = _verified_manifest(manifest_bytes, signature, key, expected_target)
    for entry in manifest.files():
        try:
            with open(root / entry.file, "rb") as handle:
                _check_hash(entry, *_copy_hashed(handle, None))
        except FileNotFoundError:
            raise BundleFormatError(f"bundle {root} is missing {entry.file}") from None
    return manifest


def _next_member(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.next()
    if member is None or member.name != name or not extraction.plain_file(member):
        raise BundleFormatError(f"archive must start with {MANIFEST_NAME} and {SIGNATURE_NAME}; found {member and member.name}")
    handle = archive.extractfile(member)
    assert handle is not None
    return _read_limited(handle, name)


def _extract_archive(source: IO[bytes], key: Any, expected_target: str | None, dest: Path) -> Manifest:
    with tarfile.open(fileobj=source, mode="r:*") as archive:
        manifest_bytes = _next_member(archive, MANIFEST_NAME)
        signature = _next_member(archive, SIGNATURE_NAME)
        manifest = _verified_manifest(manifest_bytes, signature, key, expected_target)
        expected = {entry.file: entry for entry in manifest.files()}
        while (member := archive.next()) is not None:
            entry = expected.pop(member.name, None)
            if entry is None:
                raise BundleFormatError(f"unexpected archive member '{member.name}' (not listed once in the manifest)")
            if not extraction.plain_file(member):  # a link, a folder, or a sparse file that expands as it is written
                raise BundleFormatError(f"archive member '{member.name}' is not a plain file")
            if member.size != entry.size:  # before a byte is written: a 10 KB archive wrote 200 MB, then failed
                raise IntegrityError(f"{entry.file}: {member.size} bytes in the archive, {entry.size} signed")
            handle = archive.extractfile(member)
            assert handle is not None
            _check_hash(entry, *_copy_hashed(handle, dest / entry.file))
    if expected:
        raise BundleFormatError(f"archive is missing {', '.join(sorted(expected))}")
    (dest / MANIFEST_NAME).write_bytes(manifest_bytes)
    (dest / SIGNATURE_NAME).write_bytes(signature)
    return manifest


def verify_archive(path: Path, key: Any, expected_target: str | None, dest: Path) -> Manifest:
    """Verify a single-file bundle while extracting its listed files into `dest`.

    The archive is opened here so that a missing or unreadable path is a BundleFormatError naming it, while a
    failure to write into `dest` stays the OSError it is."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise BundleFormatError(f"cannot read bundle archive {path}: {exc.strerror or exc}") from None
    with source:
        try:
            return _extract_archive(source, key, expected_target, dest)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise BundleFormatError(f"bundle archive {path.name} is truncated or corrupt: {exc}") from None


def _engine_config(entry: EngineEntry, manifest: Manifest, options: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's options, and what the signed manifest tells this engine (its own `manifest_config`)."""
    return dict(options) | engines_pkg.ENGINES.get(entry.name).manifest_config(entry, manifest)


def _open_engine(entry: EngineEntry, root: Path, manifest: Manifest, options: Mapping[str, Any]) -> engines_pkg.Engine:
    if entry.format == "object-archive":
        raise TargetMismatchError(
            f"{entry.file} is an unlinked object archive for {entry.machine}; link it with the target's toolchain first"
        )
    if entry.machine is not None and entry.machine != host_machine():
        raise TargetMismatchError(f"{entry.file} is built for {entry.machine}, this device is {host_machine()}")
    return engines_pkg.open_engine(entry.name, root / entry.file, _engine_config(entry, manifest, options))


def _selected(manifest: Manifest, names: Iterable[str] | None) -> list[EngineEntry]:
    if names is None:
        return list(manifest.engines)
    return [manifest.engine(name) for name in names]


def load_bundle(
    path: str | Path,
    *,
    trusted_public_key: Any,
    expected_target: str | None = None,
    engines: Sequence[str] | None = None,
    engine_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedBundle:
    """Verify a bundle (directory or archive) against `trusted_public_key`, then open its engines.

    `engines` picks which of the bundle's engines to open (default: all, in manifest order);
    `engine_options` passes per-engine settings such as `{"litert": {"num_threads": 2}}`.
    """
    for name in engines or ():
        engines_pkg.ENGINES.get(name)  # an unknown name fails now, before any I/O
    key = load_public_key(trusted_public_key)
    path = Path(path)
    tempdir = None
    if path.is_dir():
        manifest, root = verify_directory(path, key, expected_target), path
    elif path.is_file():
        root = extraction.new_folder()
        tempdir = str(root)
        try:
            manifest = verify_archive(path, key, expected_target, root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    else:
        raise BundleFormatError(f"bundle {path} does not exist")
    bundle = LoadedBundle(manifest, root, {}, tempdir)
    try:
        for entry in _selected(manifest, engines):
            bundle.engines[entry.name] = _open_engine(entry, root, manifest, (engine_options or {}).get(entry.name, {}))
    except BaseException:
        bundle.close()
        raise
    return bundle


def load_first_runnable(path: str | Path, *, trusted_public_key: Any, expected_target: str | None = None,
                        engine_options: Mapping[str, Mapping[str, Any]] | None = None) -> LoadedBundle:
    """Verify a bundle, then open the first of its engines that runs here. A bundle lists engines for several
    devices (LiteRT, a TVM library for a Pi's CPU); one built for another machine, or whose runtime is not installed,
    is skipped and said in the log, so an agent not told which engine to use runs what it can. None opens:
    TargetMismatchError naming each one's reason."""
    bundle = load_bundle(path, trusted_public_key=trusted_public_key, expected_target=expected_target, engines=[])
    reasons = []
    try:
        for entry in bundle.manifest.engines:
            try:
                engine = _open_engine(entry, bundle.root, bundle.manifest, (engine_options or {}).get(entry.name, {}))
            except (TargetMismatchError, engines_pkg.EngineError, UnknownChoiceError) as exc:  # or a newer engine
                log.info("engine %s of bundle %s skipped: %s", entry.name, bundle.manifest.model.name, exc)
                reasons.append(f"{entry.name}: {exc}")
                continue
            bundle.engines[entry.name] = engine
            return bundle
    except BaseException:
        bundle.close()
        raise
    bundle.close()
    raise TargetMismatchError(f"no engine of bundle {bundle.manifest.model.name} runs on this device ("
                              + "; ".join(reasons) + ")")
