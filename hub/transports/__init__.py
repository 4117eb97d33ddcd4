"""The hub's transports by name, one module each (`grpc_server`, `mqtt`): what carries hgen.v1 messages.

`HUB_TRANSPORTS` discovers this package on first use, so adding a transport is adding a file with
`@HUB_TRANSPORTS.register("name")` on a `HubTransport` subclass and a section of that name in the hub config.
"""

from __future__ import annotations

from hgen.hub.transports.base import HubTransport, UnknownHubTransportError
from hgen.runtime.registry import Registry

HUB_TRANSPORTS: Registry[type[HubTransport]] = Registry("hub-side transport", UnknownHubTransportError,
                                                      package=__name__)

__all__ = ["HUB_TRANSPORTS", "HubTransport", "UnknownHubTransportError"]
