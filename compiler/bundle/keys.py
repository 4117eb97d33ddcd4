"""Signing keys on the build machine: an Ed25519 PEM pair; the public half is installed on devices."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime import signing

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"


@dataclass(frozen=True)
class KeyInfo:
    private_path: Path | None
    public_path: Path | None
    fingerprint: str  # hex SHA-256 of the raw public key, as in the signature file
    public_base64: str  # the 32 raw public key bytes, for pasting into a device config


def describe(public_key: object, private_path: Path | None = None, public_path: Path | None = None) -> KeyInfo:
    key = signing.load_public_key(public_key)
    return KeyInfo(
        private_path,
        public_path,
        signing.fingerprint(key).hex(),
        base64.b64encode(signing.raw_public_bytes(key)).decode(),
    )


def generate_keypair(out_dir: str | Path, *, overwrite: bool = False) -> KeyInfo:
    """Write `signing.key` (mode 0600) and `signing.pub` into `out_dir`; refuse to replace a key silently."""
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise InvalidArgumentError(f"{private_path} already exists; replace it with overwrite=True (hgen keys generate --force)")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = signing.generate_private_key()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(signing.private_key_pem(key))
    public_path.write_bytes(signing.public_key_pem(key.public_key()))
    return describe(key.public_key(), private_path, public_path)


def show_key(path: str | Path) -> KeyInfo:
    """Describe a private or public key file (the private key is never printed)."""
    path = Path(path)
    try:
        private = signing.load_private_key(path)
        return describe(private.public_key(), private_path=path)
    except signing.KeyFileError as private_error:
        if not path.is_file():
            raise private_error
    return describe(signing.load_public_key(path), public_path=path)
