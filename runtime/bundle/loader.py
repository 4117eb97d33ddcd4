"""Verify-then-load on the device: signature first, then target, then file hashes, then engines.

Order matters: the manifest's signature is checked on its raw bytes before JSON parsing, the target
is checked before any file is hashed or extracted, and every model file's SHA-256 is checked before an
interpreter or `dlopen` sees it. Archives are read member by member, never extracted blindly, after their tar
headers were walked (bounded) so an unsigned archive cannot exhaust memory; folders' files are read only if regular
and only up to their signed size. Each opened engine that reads its shapes from the model file is compared with the
manifest, so a bundle whose manifest describes another model is refused at load, not on every frame.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
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
from hgen.runtime.bundle.errors import BundleFormatError, IntegrityError, NoEngineError, TargetMismatchError
from hgen.runtime.bundle.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    EngineEntry,
    Manifest,
    Quantization,
    WebModelEntry,
    parse_manifest,
)
from hgen.runtime.config import backend_option_problems
from hgen.runtime.errors import InvalidInputError, UnknownChoiceError
from hgen.runtime.signing import load_public_key, verify

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 4096
CHUNK = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class LoadedBundle:
    """A verified bundle and its opened engines (first = preferred). Close it to remove extracted files."""

    manifest: Manifest
    root: Path
    engines: dict[str, engines_pkg.Engine]
    _tempdir: str | None = field(default=None, repr=False)

    @property
    def engine(self) -> engines_pkg.Engine:
        """The preferred open engine; NoEngineError when none is open (`load_bundle(engines=[])` opens none)."""
        for engine in self.engines.values():
            return engine
        raise NoEngineError(f"no engine of bundle {self.manifest.model.name} is open: load it with engines=None "
                            f"(all) or name one of {', '.join(e.name for e in self.manifest.engines)}")

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


def _copy_hashed(source: IO[bytes], dest: Path | None, limit: int) -> tuple[str, int]:
    """SHA-256 and size of at most `limit` bytes of `source` (the signed size + 1: enough to see it is larger),
    copied to `dest` if given."""
    digest, size = hashlib.sha256(), 0
    out = open(dest, "wb") if dest is not None else None
    try:
        while size < limit and (chunk := source.read(min(CHUNK, limit - size))):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest(), size


def _check_hash(entry: EngineEntry | WebModelEntry, sha256: str, size: int) -> None:
    if size > entry.size:
        raise IntegrityError(f"{entry.file}: larger than the {entry.size} bytes of the signed manifest: "
                             "the file was modified")
    if size != entry.size or sha256 != entry.sha256:
        raise IntegrityError(
            f"{entry.file}: size/SHA-256 {size}/{sha256[:12]} differ from the signed manifest "
            f"{entry.size}/{entry.sha256[:12]}: the file was modified"
        )


def verify_directory(root: Path, key: Any, expected_target: str | None = None) -> Manifest:
    """Verify a bundle directory in place and return its manifest. Every file must be a regular file (a folder,
    FIFO or device is a BundleFormatError) and is read only up to its signed size."""
    with extraction.open_regular(root / MANIFEST_NAME) as handle:
        manifest_bytes = _read_limited(handle, MANIFEST_NAME)
    with extraction.open_regular(root / SIGNATURE_NAME) as handle:
        signature = handle.read(MAX_SIGNATURE_BYTES)
    manifest = _verified_manifest(manifest_bytes, signature, key, expected_target)
    for entry in manifest.files():
        with extraction.open_regular(root / entry.file) as handle:
            _check_hash(entry, *_copy_hashed(handle, None, entry.size + 1))
    return manifest


def _next_member(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.next()
    if member is None or member.name != name or not extraction.plain_file(member):
        raise BundleFormatError(f"archive must start with {MANIFEST_NAME} and {SIGNATURE_NAME}; found {member and member.name}")
    handle = archive.extractfile(member)
    assert handle is not None
    return _read_limited(handle, name)


def _tar_stream(source: IO[bytes]) -> IO[bytes]:
    """The archive's tar bytes: gzip (what `hgen bundle pack` writes) or an uncompressed tar. No other decompressor
    is tried: a corrupt xz archive escaped as a raw LZMAError."""
    magic = source.read(len(GZIP_MAGIC))
    source.seek(0)
    return gzip.GzipFile(fileobj=source, mode="rb") if magic == GZIP_MAGIC else source


def _check_headers(stream: IO[bytes], sizes: Mapping[str, int]) -> None:
    """Walk the archive's headers from its start (`extraction.check_tar_headers`), then return to where tarfile is."""
    position = stream.tell()
    stream.seek(0)
    extraction.check_tar_headers(stream, {MANIFEST_NAME: MAX_MANIFEST_BYTES, SIGNATURE_NAME: MAX_MANIFEST_BYTES} | sizes)
    stream.seek(position)


def _extract_archive(source: IO[bytes], key: Any, expected_target: str | None, dest: Path) -> Manifest:
    stream = _tar_stream(source)
    _check_headers(stream, {})  # before tarfile reads a header; the rest once the signed sizes are known
    with tarfile.open(fileobj=stream, mode="r:") as archive:
        manifest_bytes = _next_member(archive, MANIFEST_NAME)
        signature = _next_member(archive, SIGNATURE_NAME)
        manifest = _verified_manifest(manifest_bytes, signature, key, expected_target)
        expected = {entry.file: entry for entry in manifest.files()}
        _check_headers(stream, {name: entry.size for name, entry in expected.items()})
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
            _check_hash(entry, *_copy_hashed(handle, dest / entry.file, entry.size + 1))
    if expected:
        raise BundleFormatError(f"archive is missing {', '.join(sorted(expected))}")
    (dest / MANIFEST_NAME).write_bytes(manifest_bytes)
    (dest / SIGNATURE_NAME).write_bytes(signature)
    return manifest


def archive_manifest_bytes(path: Path) -> bytes:
    """The first member of a `.hgb` archive, its manifest, unverified (the hub reading the target of a bundle it
    recorded), through the same header walk and bound as a device's load: `tarfile.open(path, "r:*")` took any
    compression and read pax headers whole. Raises BundleFormatError, or OSError when the file cannot be read."""
    with path.open("rb") as source:
        try:
            stream = _tar_stream(source)
            _check_headers(stream, {})
            with tarfile.open(fileobj=stream, mode="r:") as archive:
                return _next_member(archive, MANIFEST_NAME)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise BundleFormatError(f"bundle archive {path.name} is truncated or corrupt: {exc}") from None


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


def _same_quant(signed: Quantization, model: engines_pkg.QuantParams | None) -> bool:
    return model is not None and math.isclose(signed.scale, model.scale, rel_tol=1e-6) and \
        signed.zero_point == model.zero_point


def _quant_text(quant: Quantization | engines_pkg.QuantParams | None) -> str:
    return "none" if quant is None else f"scale {float(quant.scale)!r}, zero point {quant.zero_point}"


def _disagreements(engine: engines_pkg.Engine, entry: EngineEntry, manifest: Manifest) -> list[str]:
    """What the model file says (shapes, precision, int8 parameters) that the signed manifest does not; nothing for
    engines whose specs come from their config or the manifest itself (`specs_from_model` False)."""
    if not engine.specs_from_model:
        return []
    pairs = [("input shape", tuple(manifest.input.shape), tuple(engine.input_spec.shape)),
             ("output shape", tuple(manifest.output_shape), tuple(engine.output_spec.shape)),
             ("precision", entry.precision, engine.precision)]
    problems = [f"{what} {signed} in the manifest, {model} in the model" for what, signed, model in pairs
                if signed != model]
    for what, signed, model in (("input quantization", entry.input_quantization, engine.input_quant),
                                ("output quantization", entry.output_quantization, engine.output_quant)):
        if signed is not None and not _same_quant(signed, model):
            problems.append(f"{what} {_quant_text(signed)} in the manifest, {_quant_text(model)} in the model")
    return problems


def _open_engine(entry: EngineEntry, root: Path, manifest: Manifest, options: Mapping[str, Any]) -> engines_pkg.Engine:
    if entry.format == "object-archive":
        raise TargetMismatchError(
            f"{entry.file} is an unlinked object archive for {entry.machine}; link it with the target's toolchain first"
        )
    if entry.machine is not None and entry.machine != host_machine():
        raise TargetMismatchError(f"{entry.file} is built for {entry.machine}, this device is {host_machine()}")
    engine = engines_pkg.open_engine(entry.name, root / entry.file, _engine_config(entry, manifest, options))
    if problems := _disagreements(engine, entry, manifest):
        raise BundleFormatError(f"{entry.file} ({entry.name}) does not match the signed manifest: "
                                f"{'; '.join(problems)}. The manifest describes another model: rebuild the bundle "
                                "from the model it ships")
    return engine


def _check_engine_options(options: Mapping[str, Mapping[str, Any]] | None) -> None:
    """A misspelt engine name (`litrt`) or option is refused before any I/O, not silently dropped."""
    if problems := backend_option_problems(engines_pkg.ENGINES, options or {}, each_key=True):
        raise InvalidInputError("engine_options: " + "; ".join(problems))


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
    `engine_options` passes per-engine settings such as `{"litert": {"num_threads": 2}}`; an unknown engine or option
    there is an InvalidInputError (options for a registered engine the bundle lacks are allowed).
    """
    for name in engines or ():
        engines_pkg.ENGINES.get(name)  # an unknown name fails now, before any I/O
    _check_engine_options(engine_options)
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
    _check_engine_options(engine_options)
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
