"""The bundle's file digests (the manifest lists each file's SHA-256, and the signature covers the manifest)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def file_fields(path: Path) -> dict[str, Any]:
    """How the manifest lists a file of the bundle: its name, digest and size (engine and web entries alike)."""
    return {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}
