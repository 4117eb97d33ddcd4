"""A variant set: up to K signed bundles of one model family and one signed index (`variants.json`).

The index pins every member archive by size and SHA-256 and carries what the selector needs per variant: the
predicted A/T/S/E/L and memory on the target, the calibrated temperature, and tau per labour level. Its
signature (`variants.sig`, the same Ed25519 key as the members) therefore covers the whole set; each member is
also an ordinary signed bundle, so switching to one goes through the agent's usual verify + health check + swap.

Layout: a folder with variants.json, variants.sig and the member archives (`<name>.hgb`), or the same as one file
(`.hgv`, a tar: the index and its signature first, then the members), verified while it is unpacked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import Field

from hgen.runtime import signing
from hgen.runtime.bundle.extraction import check_tar_headers, open_regular, plain_file
from hgen.runtime.bundle.errors import BundleFormatError, IntegrityError, TargetMismatchError
from hgen.runtime.bundle.manifest import SAFE_FILE, SEMVER, file_digest
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.variants import Budgets, LabourLevel, VariantSpec

ARCHIVE_SUFFIX = ".hgv"
INDEX_NAME = "variants.json"
INDEX_SIGNATURE = "variants.sig"
MAX_VARIANTS = 16
MAX_INDEX_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 4096


class LevelEntry(StrictModel):
    labour: float = Field(ge=0.0, le=1.0, title="the labour share L (Eq. 13) this tau was chosen to stay within: what "
                                                "the selector compares with the labour the device may spend")
    tau: float = Field(ge=0.0, le=1.0)
    accuracy: float = Field(ge=0.0, le=1.0, title="predicted fused accuracy at this tau (test split)")
    labour_measured: float | None = Field(None, ge=0.0, le=1.0, title="L this tau spent on the test split")


class VariantEntry(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    file: str = Field(pattern=SAFE_FILE, title="member bundle archive in the set's folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    temperature: float = Field(gt=0.0)
    accuracy_model_only: float = Field(ge=0.0, le=1.0)
    latency_ms: float = Field(ge=0.0)
    storage_mb: float = Field(ge=0.0)
    energy_mj: float = Field(ge=0.0)
    memory_mb: float = Field(ge=0.0)
    levels: tuple[LevelEntry, ...] = Field(min_length=1, title="tau per labour level, by increasing labour")
    plan: dict[str, Any] = Field(default_factory=dict)

    def spec(self) -> VariantSpec:
        return VariantSpec(self.name, self.latency_ms, self.storage_mb, self.energy_mj, self.memory_mb,
                           tuple(LabourLevel(lv.labour, lv.tau, lv.accuracy) for lv in self.levels))


class BudgetEntry(StrictModel):
    accuracy: float = Field(ge=0.0, le=1.0)
    latency_ms: float = Field(gt=0.0)
    storage_mb: float = Field(gt=0.0)
    energy_mj: float = Field(gt=0.0)


class VariantIndex(StrictModel):
    schema_version: int = Field(1, ge=1, le=1)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(pattern=SEMVER)
    target: str
    demands: BudgetEntry
    variants: tuple[VariantEntry, ...] = Field(min_length=1, max_length=MAX_VARIANTS)

    def to_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"

    def budgets(self) -> Budgets:
        d = self.demands
        return Budgets(d.accuracy, d.latency_ms, d.storage_mb, d.energy_mj)


@dataclass(frozen=True)
class VariantSet:
    """A verified set: the index, each member's archive path, and the selector's specs."""

    index: VariantIndex
    root: Path

    @property
    def specs(self) -> tuple[VariantSpec, ...]:
        return tuple(v.spec() for v in self.index.variants)

    def path(self, variant: int) -> Path:
        return self.root / self.index.variants[variant].file


def write_index(root: Path, index: VariantIndex, private_key: Any) -> Path:
    """Sign and write the index of members already in `root` (sizes and hashes are checked first)."""
    for entry in index.variants:
        sha, size = file_digest(root / entry.file)
        if (sha, size) != (entry.sha256, entry.size):
            raise IntegrityError(f"variant {entry.name}: {entry.file} does not match its entry")
    data = index.to_bytes()
    (root / INDEX_NAME).write_bytes(data)
    (root / INDEX_SIGNATURE).write_bytes(signing.sign(data, signing.load_private_key(private_key)))
    return root / INDEX_NAME


def member_entry(path: Path, **fields: Any) -> VariantEntry:
    """An index entry for the member archive at `path` (name, costs and levels in `fields`)."""
    sha, size = file_digest(path)
    return VariantEntry(file=path.name, sha256=sha, size=size, **fields)


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file: an index that is a FIFO, a device or a huge file is refused, not read
    whole into memory before its signature is checked."""
    try:
        with open_regular(path) as handle:
            data = handle.read(limit + 1)
    except BundleFormatError as exc:
        raise BundleFormatError(f"{path.parent} is not a variant set: {exc}") from None
    if len(data) > limit:
        raise BundleFormatError(f"{path.name} is larger than {limit} bytes")
    return data


def _member_digest(path: Path, entry: VariantEntry) -> tuple[str, int]:
    """(SHA-256, size) of at most the signed size + 1 bytes of a member, which must be a regular file."""
    try:
        handle = open_regular(path)
    except BundleFormatError as exc:
        raise BundleFormatError(f"variant {entry.name}: {exc}") from None
    digest, size = hashlib.sha256(), 0
    with handle:
        while size <= entry.size and (block := handle.read(min(1 << 20, entry.size + 1 - size))):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def load_variant_set(root: str | Path, trusted_public_key: Any, expected_target: str | None = None) -> VariantSet:
    """Verify the index signature and every member's size and hash; typed bundle errors otherwise."""
    root = Path(root)
    data = _read_bounded(root / INDEX_NAME, MAX_INDEX_BYTES)
    signature = _read_bounded(root / INDEX_SIGNATURE, MAX_SIGNATURE_BYTES)
    signing.verify(data, signature, signing.load_public_key(trusted_public_key))
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BundleFormatError(f"{INDEX_NAME} is not JSON: {exc}") from exc
    index = parse_config(VariantIndex, raw, source=INDEX_NAME, error=BundleFormatError)
    if expected_target is not None and index.target != expected_target:
        raise TargetMismatchError(f"variant set built for {index.target}, this device is {expected_target}")
    for entry in index.variants:
        if _member_digest(root / entry.file, entry) != (entry.sha256, entry.size):
            raise IntegrityError(f"variant {entry.name}: {entry.file} does not match the signed index")
    return VariantSet(index, root)


def pack_variant_set(root: str | Path, out: str | Path | None = None) -> Path:
    """The set folder as one `.hgv` file: index and signature first (a device verifies them before any member)."""
    root = Path(root)
    index = parse_config(VariantIndex, json.loads((root / INDEX_NAME).read_bytes()), source=INDEX_NAME,
                         error=BundleFormatError)
    out = Path(out) if out is not None else root.with_suffix(ARCHIVE_SUFFIX)
    with tarfile.open(out, "w") as archive:
        for name in (INDEX_NAME, INDEX_SIGNATURE, *(entry.file for entry in index.variants)):
            info = archive.gettarinfo(str(root / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with (root / name).open("rb") as handle:
                archive.addfile(info, handle)
    return out


def _member_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.next()
    if member is None or member.name != name or not plain_file(member) or member.size > MAX_INDEX_BYTES:
        raise BundleFormatError(f"a variant set archive starts with {INDEX_NAME} and {INDEX_SIGNATURE}; "
                                f"found {member and member.name}")
    handle = archive.extractfile(member)
    assert handle is not None
    return handle.read()


def _check_headers(source: IO[bytes], sizes: dict[str, int]) -> None:
    """Walk the set's headers from its start before tarfile parses them (`check_tar_headers`), then return."""
    position = source.tell()
    source.seek(0)
    check_tar_headers(source, {INDEX_NAME: MAX_INDEX_BYTES, INDEX_SIGNATURE: MAX_INDEX_BYTES} | sizes)
    source.seek(position)


def _unpack(path: Path, key: Any, expected_target: str | None, dest: Path) -> VariantSet:
    with path.open("rb") as source:
        return _unpack_from(source, key, expected_target, dest)


def _unpack_from(source: IO[bytes], key: Any, expected_target: str | None, dest: Path) -> VariantSet:
    _check_headers(source, {})  # before tarfile reads a header; the rest once the signed sizes are known
    with tarfile.open(fileobj=source, mode="r:") as archive:  # uncompressed, as `pack_variant_set` writes it
        data, signature = _member_bytes(archive, INDEX_NAME), _member_bytes(archive, INDEX_SIGNATURE)
        signing.verify(data, signature, signing.load_public_key(key))
        index = parse_config(VariantIndex, json.loads(data), source=INDEX_NAME, error=BundleFormatError)
        if expected_target is not None and index.target != expected_target:
            raise TargetMismatchError(f"variant set built for {index.target}, this device is {expected_target}")
        expected = {entry.file: entry for entry in index.variants}
        _check_headers(source, {entry.file: entry.size for entry in index.variants})
        dest.mkdir(parents=True, exist_ok=True)
        while (member := archive.next()) is not None:
            entry = expected.pop(member.name, None)
            if entry is None or not plain_file(member) or member.size != entry.size:
                raise BundleFormatError(f"unexpected variant set member {member.name!r}")
            handle = archive.extractfile(member)
            assert handle is not None
            digest = hashlib.sha256()
            with (dest / entry.file).open("wb") as out:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != entry.sha256:
                raise IntegrityError(f"variant {entry.name}: {entry.file} does not match the signed index")
    if expected:
        raise BundleFormatError(f"variant set archive is missing {', '.join(sorted(expected))}")
    (dest / INDEX_NAME).write_bytes(data)
    (dest / INDEX_SIGNATURE).write_bytes(signature)
    return VariantSet(index, dest)


def unpack_variant_set(path: str | Path, trusted_public_key: Any, dest: str | Path,
                       expected_target: str | None = None) -> VariantSet:
    """Verify a `.hgv` while unpacking it into `dest`: the signed index first, then each member by size and hash."""
    try:
        return _unpack(Path(path), trusted_public_key, expected_target, Path(dest))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, json.JSONDecodeError) as exc:
        raise BundleFormatError(f"variant set archive {Path(path).name} is truncated or corrupt: {exc}") from None


def open_variant_set(path: str | Path, trusted_public_key: Any, store: str | Path,
                     expected_target: str | None = None) -> VariantSet:
    """A set folder is verified in place; a `.hgv` is unpacked (and verified) into `store/<its name>`."""
    path = Path(path)
    if path.is_file():
        return unpack_variant_set(path, trusted_public_key, Path(store) / path.stem, expected_target)
    return load_variant_set(path, trusted_public_key, expected_target)
