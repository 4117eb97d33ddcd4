"""Signed model bundles on the device: verify the Ed25519 signature and file hashes, then open engines."""

from hgen.runtime.bundle.errors import (
    BundleError,
    BundleFormatError,
    BundleTooNewError,
    IntegrityError,
    SignatureError,
    TargetMismatchError,
    UntrustedKeyError,
)
from hgen.runtime.bundle.manifest import MANIFEST_NAME, SCHEMA_VERSION, SIGNATURE_NAME, EngineEntry, InputSpec, Manifest

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "SIGNATURE_NAME",
    "BundleError",
    "BundleFormatError",
    "BundleTooNewError",
    "EngineEntry",
    "InputSpec",
    "IntegrityError",
    "LoadedBundle",
    "Manifest",
    "SignatureError",
    "TargetMismatchError",
    "UntrustedKeyError",
    "load_bundle",
    "load_first_runnable",
]


def __getattr__(name: str):
    """`load_bundle`/`LoadedBundle` load lazily: the loader imports the engines, which import this package."""
    if name in {"load_bundle", "load_first_runnable", "LoadedBundle", "verify_directory", "verify_archive"}:
        from hgen.runtime.bundle import loader

        return getattr(loader, name)
    raise AttributeError(name)
