"""Exception root of `hgen.edge_agent`."""

from hgen.runtime.errors import HGenError


class AgentError(HGenError):
    """Root of every error raised by `hgen.edge_agent`."""
