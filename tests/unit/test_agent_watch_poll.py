"""The agent's WatchUpdates loop when the hub has no stream slot for it (no network: a stand-in stub): the hub
sends the newest notice and ends the call with RESOURCE_EXHAUSTED. The loop reset its back-off on every notice
and called again at once, about 5 times a second for as long as the device had not run that version."""

from __future__ import annotations

import grpc

from hgen.edge_agent.config import HubConfig
from hgen.edge_agent.transports.base import TransportCallbacks, parse_endpoint
from hgen.edge_agent.transports.grpc import WATCH_POLL_S, GrpcTransport
from hgen.protos import hub_pb2


class Exhausted(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED


class CappedHub:
    """WatchUpdates as a capped hub answers it: the notice, then RESOURCE_EXHAUSTED."""

    calls = 0

    def WatchUpdates(self, request, wait_for_ready=True):  # noqa: N802 (the gRPC method's name)
        self.calls += 1
        yield hub_pb2.ModelUpdate(bundle_name="m", version="2.0.0")
        raise Exhausted()


class Waits:
    """Stands in for the stop event: records each wait and stops the loop after three."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.seconds.append(seconds)
        return len(self.seconds) >= 3

    def is_set(self) -> bool:
        return False


def test_a_capped_watch_polls_every_few_seconds_instead_of_at_once() -> None:
    notices: list[str] = []
    callbacks = TransportCallbacks(on_reply=lambda r: None, on_update=lambda n: notices.append(n.version),
                                   on_state=lambda *a: None)
    transport = GrpcTransport(parse_endpoint("grpc://127.0.0.1:1"), HubConfig(url="grpc://127.0.0.1:1"), "cam-1",
                              callbacks)
    hub, waits = CappedHub(), Waits()
    transport._stub, transport._stopping = hub, waits  # type: ignore[assignment]
    try:
        transport._watch_loop()
    finally:
        transport._channel.close()
    assert notices == ["2.0.0"] * 3 and hub.calls == 3
    assert waits.seconds == [WATCH_POLL_S] * 3 and WATCH_POLL_S >= 1.0
