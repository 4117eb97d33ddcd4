"""Typed refusals of a bundle: each names what is wrong before any model byte is parsed."""

from hgen.runtime.errors import HGenRuntimeError
from hgen.runtime.signing import SignatureError, UntrustedKeyError


class BundleError(HGenRuntimeError):
    """Root of bundle problems on the device."""


class BundleFormatError(BundleError):
    """Missing files, a truncated or corrupt archive, unexpected archive members, or an invalid manifest."""


class BundleTooNewError(BundleFormatError):
    """The signed manifest has fields, or a schema version, this runtime does not know: the bundle was made by a newer
    hgen release (a hub upgraded ahead of its devices). Refused as before, but saying so: an older agent keeps its
    running bundle and its operator learns the cure is upgrading the agent, not re-publishing the bundle."""


class IntegrityError(BundleError):
    """A file's size or SHA-256 differs from the signed manifest (the file was modified)."""


class TargetMismatchError(BundleError):
    """The bundle (or one of its libraries) was built for another target or CPU architecture."""


class NoEngineError(BundleError):
    """A loaded bundle was asked for its engine but none is open (`load_bundle(engines=[])`)."""


__all__ = [
    "BundleError",
    "BundleFormatError",
    "BundleTooNewError",
    "IntegrityError",
    "NoEngineError",
    "SignatureError",
    "TargetMismatchError",
    "UntrustedKeyError",
]
