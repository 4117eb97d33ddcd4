"""The members of a variant set as models: each member's signed manifest, read when the set is opened, and the
check that they are one model (name, kind, labels, input and output shape). The set's index pins every archive
but says nothing about what is inside, so a set mixing models would otherwise be switched to at run time: another
label set under the same results, or another model's answers fused with people's."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hgen.edge_agent.errors import AgentConfigError
from hgen.runtime.bundle.errors import BundleFormatError
from hgen.runtime.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest, parse_manifest
from hgen.runtime.bundle.variants import VariantSet
from hgen.runtime.signing import load_public_key, verify

MAX_MANIFEST_BYTES = 1 << 20
SAME: dict[str, Callable[[Manifest], Any]] = {  # what every member must share, by what an operator calls it
    "model name": lambda m: m.model.name,
    "kind": lambda m: m.kind,
    "labels": lambda m: m.labels,
    "input shape": lambda m: m.input.shape,
    "output shape": lambda m: m.output_shape,
}


def _first_members(archive: tarfile.TarFile) -> tuple[bytes, bytes]:
    """The manifest and its signature: a bundle archive starts with them."""
    found = []
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        member = archive.next()
        if member is None or member.name != name or not member.isfile() or member.size > MAX_MANIFEST_BYTES:
            raise BundleFormatError(f"archive must start with {MANIFEST_NAME} and {SIGNATURE_NAME}")
        handle = archive.extractfile(member)
        assert handle is not None
        found.append(handle.read(MAX_MANIFEST_BYTES))
    return found[0], found[1]


def member_manifest(path: Path, public_key: Any) -> Manifest:
    """A member archive's signed manifest, without unpacking its model files."""
    try:
        with tarfile.open(path, "r:*") as archive:
            data, signature = _first_members(archive)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleFormatError(f"variant member {path.name}: {exc}") from exc
    verify(data, signature, load_public_key(public_key))
    return parse_manifest(data)


def check_one_model(names: Sequence[str], manifests: Sequence[Manifest], where: str) -> None:
    """AgentConfigError naming the first property the members disagree on, and who says what."""
    for what, read in SAME.items():
        groups: dict[str, list[str]] = {}
        for name, manifest in zip(names, manifests):
            groups.setdefault(repr(read(manifest)), []).append(name)
        if len(groups) > 1:
            said = "; ".join(f"{', '.join(members)}: {value}" for value, members in groups.items())
            raise AgentConfigError(f"adapt.variants {where}: the members are not one model, they disagree on the "
                                   f"{what} ({said})")


def set_manifests(variants: VariantSet, public_key: Any) -> tuple[Manifest, ...]:
    """Every member's manifest, in index order, checked to be one model."""
    manifests = tuple(member_manifest(variants.path(i), public_key) for i in range(len(variants.index.variants)))
    check_one_model([e.name for e in variants.index.variants], manifests, str(variants.root))
    return manifests
