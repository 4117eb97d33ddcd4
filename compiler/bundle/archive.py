"""The single-file bundle: a gzip tar with manifest.json and manifest.sig first, then the listed files.

The order lets the device verify the signature before reading any model member; entries are normalised
(owner, mode, mtime) so packing the same directory twice gives the same bytes.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

from hgen.compiler.errors import CompilerError
from hgen.runtime.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, parse_manifest

ARCHIVE_SUFFIX = ".hgb"


def _add(archive: tarfile.TarFile, path: Path, mtime: int) -> None:
    info = tarfile.TarInfo(path.name)
    info.size = path.stat().st_size
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, mtime, 0, 0, "", ""
    with open(path, "rb") as handle:
        archive.addfile(info, handle)


def pack_bundle(bundle_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Pack a bundle directory into `<dir>.hgb` (or `out_path`); returns the archive path."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file() or not (bundle_dir / SIGNATURE_NAME).is_file():
        raise CompilerError(f"{bundle_dir} is not a signed bundle (needs {MANIFEST_NAME} and {SIGNATURE_NAME})")
    manifest = parse_manifest(manifest_path.read_bytes())
    out = Path(out_path) if out_path is not None else bundle_dir.with_suffix(ARCHIVE_SUFFIX)
    members = [manifest_path, bundle_dir / SIGNATURE_NAME] + [bundle_dir / e.file for e in manifest.files()]
    partial = out.with_name(out.name + ".part")  # a disk filling up mid-way leaves no truncated archive to ship
    try:
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped:
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
                for path in members:
                    _add(archive, path, mtime=0)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out
