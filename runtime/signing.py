"""Ed25519 signing of bundle manifests, shared by the compiler (signs) and the device (verifies).

The signature file has a fixed binary layout (magic, key fingerprint, signature) so the device can
check it without parsing anything: a JSON or PEM parser never sees untrusted bytes before verification.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from hgen.runtime.errors import HGenRuntimeError, InvalidInputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_MAGIC = b"HGSIG\x00\x01\x00"
FINGERPRINT_BYTES = 32
SIGNATURE_BYTES = 64
SIGNATURE_FILE_BYTES = len(SIGNATURE_MAGIC) + FINGERPRINT_BYTES + SIGNATURE_BYTES



class SignatureError(HGenRuntimeError):
    """A signature is missing, malformed, or does not match the signed bytes (tampering)."""


class UntrustedKeyError(SignatureError):
    """The bundle was signed by a key other than the trusted one."""


class KeyFileError(InvalidInputError):
    """A key file is missing or is not an Ed25519 key."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise HGenRuntimeError("bundle signing needs the 'cryptography' package: pip install 'hgen[edge]'") from exc
    return serialization, ed25519


def generate_private_key() -> Ed25519PrivateKey:
    _, ed25519 = _crypto()
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    serialization, _ = _crypto()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> bytes:
    """SHA-256 of the raw public key: names the key in the signature file and in `hgen keys show`."""
    return hashlib.sha256(raw_public_bytes(key)).digest()


def _read_key_bytes(value: str | Path | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    path = Path(value)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def load_private_key(value: Ed25519PrivateKey | str | Path | bytes) -> Ed25519PrivateKey:
    """Accept a key object, a PEM file path or PEM bytes."""
    serialization, ed25519 = _crypto()
    if isinstance(value, ed25519.Ed25519PrivateKey):
        return value
    data = _read_key_bytes(value)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(value: Ed25519PublicKey | str | Path | bytes) -> Ed25519PublicKey:
    """Accept a key object, a PEM file path, PEM bytes or the 32 raw key bytes."""
    serialization, ed25519 = _crypto()
    if isinstance(value, ed25519.Ed25519PublicKey):
        return value
    if isinstance(value, ed25519.Ed25519PrivateKey):
        return value.public_key()
    data = _read_key_bytes(value)
    if len(data) == 32 and not data.startswith(b"-----"):
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def sign(message: bytes, key: Ed25519PrivateKey) -> bytes:
    """Return the signature file content for `message`."""
    return SIGNATURE_MAGIC + fingerprint(key.public_key()) + key.sign(message)


def verify(message: bytes, signature_file: bytes, trusted: Ed25519PublicKey) -> None:
    """Raise unless `signature_file` is a valid signature of `message` by `trusted`."""
    from cryptography.exceptions import InvalidSignature

    if len(signature_file) != SIGNATURE_FILE_BYTES or not signature_file.startswith(SIGNATURE_MAGIC):
        raise SignatureError(
            f"signature file is malformed ({len(signature_file)} bytes, expected {SIGNATURE_FILE_BYTES})"
        )
    key_id = signature_file[len(SIGNATURE_MAGIC) : len(SIGNATURE_MAGIC) + FINGERPRINT_BYTES]
    expected_id = fingerprint(trusted)
    if key_id != expected_id:
        raise UntrustedKeyError(
            f"bundle is signed by key {key_id.hex()[:16]}, but the trusted key is {expected_id.hex()[:16]}"
        )
    try:
        trusted.verify(signature_file[-SIGNATURE_BYTES:], message)
    except InvalidSignature:
        raise SignatureError("manifest signature does not match: the manifest was modified after signing") from None
