"""Uplinks to the annotation hub, one module per protocol (`grpc`, `mqtt`), chosen by the hub URL's scheme."""

from hgen.edge_agent.transports.base import (
    TRANSPORTS,
    ConnectionState,
    Transport,
    TransportCallbacks,
    TransportErrorCode,
    open_transport,
)

__all__ = ["TRANSPORTS", "ConnectionState", "Transport", "TransportCallbacks", "TransportErrorCode",
           "open_transport"]
