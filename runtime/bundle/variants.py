"""A variant set: up to K signed bundles of one model family and one signed index (`variants.json`).

The index pins every member archive by size and SHA-256 and carries what the selector needs per variant: the
predicted A/T/S/E/L and memory on the target, the calibrated temperature, and tau per labour level. Its
signature (`variants.sig`, the same Ed25519 key as the members) therefore covers the whole set; each member is
also an ordinary signed bundle, so switching to one goes through the agent's usual verify + health check + swap.

Layout: a folder with variants.json, variants.sig and the member archives (`<name>.hgb`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from hgen.runtime import signing
from hgen.runtime.bundle.errors import BundleFormatError, IntegrityError, TargetMismatchError
from hgen.runtime.bundle.manifest import SAFE_FILE, SEMVER
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.variants import Budgets, LabourLevel, VariantSpec

INDEX_NAME = "variants.json"
INDEX_SIGNATURE = "variants.sig"
MAX_VARIANTS = 16
MAX_INDEX_BYTES = 1 << 20


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


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def write_index(root: Path, index: VariantIndex, private_key: Any) -> Path:
    """Sign and write the index of members already in `root` (sizes and hashes are checked first)."""
    for entry in index.variants:
        sha, size = _sha256(root / entry.file)
        if (sha, size) != (entry.sha256, entry.size):
            raise IntegrityError(f"variant {entry.name}: {entry.file} does not match its entry")
    data = index.to_bytes()
    (root / INDEX_NAME).write_bytes(data)
    (root / INDEX_SIGNATURE).write_bytes(signing.sign(data, signing.load_private_key(private_key)))
    return root / INDEX_NAME


def member_entry(path: Path, **fields: Any) -> VariantEntry:
    """An index entry for the member archive at `path` (name, costs and levels in `fields`)."""
    sha, size = _sha256(path)
    return VariantEntry(file=path.name, sha256=sha, size=size, **fields)


def load_variant_set(root: str | Path, trusted_public_key: Any, expected_target: str | None = None) -> VariantSet:
    """Verify the index signature and every member's size and hash; typed bundle errors otherwise."""
    root = Path(root)
    try:
        data = (root / INDEX_NAME).read_bytes()
        signature = (root / INDEX_SIGNATURE).read_bytes()
    except OSError as exc:
        raise BundleFormatError(f"{root} is not a variant set: {exc}") from exc
    if len(data) > MAX_INDEX_BYTES:
        raise BundleFormatError(f"{INDEX_NAME} is larger than {MAX_INDEX_BYTES} bytes")
    signing.verify(data, signature, signing.load_public_key(trusted_public_key))
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BundleFormatError(f"{INDEX_NAME} is not JSON: {exc}") from exc
    index = parse_config(VariantIndex, raw, source=INDEX_NAME, error=BundleFormatError)
    if expected_target is not None and index.target != expected_target:
        raise TargetMismatchError(f"variant set built for {index.target}, this device is {expected_target}")
    for entry in index.variants:
        path = root / entry.file
        if not path.is_file():
            raise BundleFormatError(f"variant {entry.name}: {entry.file} is missing")
        if _sha256(path) != (entry.sha256, entry.size):
            raise IntegrityError(f"variant {entry.name}: {entry.file} does not match the signed index")
    return VariantSet(index, root)
