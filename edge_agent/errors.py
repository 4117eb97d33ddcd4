"""Exception root of `hgen.edge_agent`; one subclass per thing an operator can fix."""

from hgen.runtime.errors import ConfigError, HGenError, InvalidInputError
from hgen.runtime.preprocess import FrameShapeError as RuntimeFrameShapeError


class AgentError(HGenError):
    """Root of every error raised by `hgen.edge_agent`."""


class AgentConfigError(AgentError, ConfigError):
    """agent.yaml (or a dict) failed validation; the message lists every problem by key path."""


class SourceError(AgentError):
    """A frame source cannot be opened or read (missing file, camera gone, bad URL)."""


class SourceSettingError(SourceError, ConfigError):
    """source.uri names no file or folder, or one that is not what source.kind reads: a configuration problem
    (exit 2), which a supervisor restarting the agent every few seconds cannot fix."""


class TransportError(AgentError):
    """The hub cannot be reached or refused a request; samples stay in the outbox."""


class OutboxError(AgentError):
    """The on-disk outbox cannot be opened or written."""


class OutboxDamagedError(OutboxError):
    """The outbox file is not a readable SQLite database any more (a damaged card): the agent moves it aside and
    starts a fresh one, where a locked file or another device's is refused."""


class SwapError(AgentError):
    """A model update could not be downloaded, verified, loaded or failed its health check."""


class DownloadError(SwapError):
    """A bundle download broke off or arrived damaged (network, size, digest): the same notice, sent again after a
    reconnect, is followed again; a refused, missing or unverifiable bundle is not."""


class StoppedError(SwapError):
    """The agent stopped while a bundle was being loaded: it is not staged (nor refused; its file is kept, and a
    restart follows the notice again)."""


class StagedPendingError(SwapError):
    """`swap_to(..., keep_staged=True)` while another candidate (a hub update) is staged and has not run yet: the
    caller (a variant swap) must not replace it; nothing was loaded."""


class HealthCheckError(SwapError):
    """A candidate bundle produced wrong-shaped or non-finite outputs on the canary inputs."""


class FrameShapeError(AgentError, RuntimeFrameShapeError):
    """A frame cannot become the model's input (the frame is reported invalid, the stream goes on); still the
    runtime's FrameShapeError, which the shared preprocessing steps raise."""


class ModelKindError(AgentError, InvalidInputError):
    """The bundle's H-DNN kind cannot do what was asked of it (class probabilities of a detector)."""


class OutboxOwnerError(AgentConfigError):
    """The configured outbox file holds another device's samples."""


class ResultDroppedError(AgentError):
    """A sink let one result go for good (counted in sink_errors): it is not kept for re-delivery, unlike a sink that
    failed and may take it later. A bounded sink (the mqtt sink's queue while its broker is away) raises it: keeping
    every refused result in the outbox's journal grew it without bound and re-offered them all at once at restart."""

