"""The bundle's file digests (the manifest lists each file's SHA-256, and the signature covers the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hgen.runtime.bundle.manifest import file_digest


def sha256_file(path: Path) -> str:
    return file_digest(path)[0]


def file_fields(path: Path) -> dict[str, Any]:
    """How the manifest lists a file of the bundle: its name, digest and size (engine and web entries alike)."""
    sha256, size = file_digest(path)
    return {"file": path.name, "sha256": sha256, "size": size}
