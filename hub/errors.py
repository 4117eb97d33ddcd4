"""Exception root of `hgen.hub`."""

from hgen.runtime.errors import HGenError


class HubError(HGenError):
    """Root of every error raised by `hgen.hub`."""


class CrowdConfigError(HubError, ValueError):
    """An annotator or crowd parameter is out of range (for example m < 1 or an accuracy above 1)."""
