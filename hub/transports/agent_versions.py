"""Which agent each device runs, read from its status (DeviceStatus.agent_version and protocol_revision).

A hub is upgraded ahead of its devices: hgen.v1 stays compatible, so it keeps serving the older agents, but the
operator needs to know which devices an upgrade left behind. Each device's agent is logged once per hub process, and
again when it changes: a device that reports no revision runs an agent (or a phone page cached) from before the
field, logged at INFO; a reported revision other than the hub's is a WARNING naming both.
The status itself is stored whole on the device's row, so what was reported also outlives the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from hgen.protos import PROTOCOL_REVISION, hub_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentRelease:
    """What a device's status says about its agent: "" and 0 when it says nothing."""

    version: str
    revision: int

    def describe(self) -> str:
        return f"agent {self.version!r} (protocol revision {self.revision})" if self.version else \
            f"an agent of unknown release (protocol revision {self.revision})"


class AgentVersions:
    """Thread-safe; `count(metric)` is the hub's counter (hgen.hub.metrics)."""

    def __init__(self, count: Callable[[str], None], revision: int = PROTOCOL_REVISION) -> None:
        self._count = count
        self.revision = revision
        self._lock = threading.Lock()
        self._seen: dict[str, AgentRelease] = {}

    def seen(self, status: hub_pb2.DeviceStatus) -> str | None:
        """Note the agent of an accepted status (from an enrolled device: the fleet bounds what is kept); the
        message logged, if this device's agent is new to this process."""
        release = AgentRelease(status.agent_version[:64], int(status.protocol_revision))
        with self._lock:
            if self._seen.get(status.device_id) == release:
                return None
            self._seen[status.device_id] = release
        return self._report(status.device_id, release)

    def fleet(self) -> dict[str, AgentRelease]:
        """Each device's agent, as last reported to this process."""
        with self._lock:
            return dict(self._seen)

    def _report(self, device: str, release: AgentRelease) -> str | None:
        if release.revision == 0:
            self._count("agent_version_unreported")
            message = (f"device {device!r} does not report its agent's version: its agent predates protocol revision "
                       f"1 (this hub implements revision {self.revision}), or it is a phone page cached from before "
                       "it. It is served as before; upgrade its agent (hgen-agent), or reload the page, to have its "
                       "version reported")
            log.info(message)
            return message
        if release.revision < self.revision:
            self._count("agent_older_than_hub")
            message = (f"device {device!r} runs {release.describe()}, older than this hub's protocol revision "
                       f"{self.revision}: it is served as before; upgrade its agent (hgen-agent)")
        elif release.revision > self.revision:
            self._count("agent_newer_than_hub")
            message = (f"device {device!r} runs {release.describe()}, newer than this hub's protocol revision "
                       f"{self.revision}: upgrade the hub before its devices")
        else:
            log.info("device %r runs %s", device, release.describe())
            return None
        log.warning(message)
        return message
