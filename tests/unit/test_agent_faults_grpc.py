"""One reply the agent fails to take does not end its Submit stream (real gRPC, a minimal in-process hub): the
replies after it on the same stream still reach the agent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from hgen.edge_agent.config import HubConfig
from hgen.edge_agent.transports import TransportCallbacks, open_transport
from hgen.hub.testing.services import free_port, wait_until
from hgen.protos import hub_pb2, hub_pb2_grpc

WAIT_S = 10.0


class Answering(hub_pb2_grpc.AnnotationHubServicer):
    """Replies to every sample of a request on the request's own stream, in order."""

    def Submit(self, request: hub_pb2.AnnotationRequest, context: grpc.ServicerContext  # noqa: N802 (gRPC API)
               ) -> Iterator[hub_pb2.SampleReply]:
        for sample in request.samples:
            yield hub_pb2.SampleReply(sample_id=sample.sample_id, status=hub_pb2.REPLY_STATUS_ANSWERED)


class Agentish:
    """The agent's reply handler, failing on the first sample (its outbox full at that moment)."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.done = threading.Event()

    def on_reply(self, reply: hub_pb2.SampleReply) -> None:
        if reply.sample_id == "s-1":
            raise OSError("disk full")
        self.taken.append(reply.sample_id)
        if reply.sample_id == "s-3":
            self.done.set()


def test_a_reply_the_agent_fails_to_take_does_not_end_the_stream() -> None:
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    hub_pb2_grpc.add_AnnotationHubServicer_to_server(Answering(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    agent = Agentish()
    transport = open_transport(HubConfig(url=f"grpc://127.0.0.1:{port}"), "cam-1",
                               TransportCallbacks(agent.on_reply, lambda notice: None, lambda *state: None))
    try:
        transport.start()
        request = hub_pb2.AnnotationRequest(batch_id="b-1", device_id="cam-1",
                                            samples=[hub_pb2.Sample(sample_id=f"s-{i}") for i in (1, 2, 3)])
        assert transport.send(request)
        assert agent.done.wait(WAIT_S), f"the stream ended at the failing reply; taken: {agent.taken}"
        assert agent.taken == ["s-2", "s-3"]
    finally:
        transport.stop()
        server.stop(None)


CAPPED = "device 'cam-1' already has 7 calls open (grpc.max_calls_per_device): retry when one ends"
TOO_LARGE = "AnnotationRequest of 9000000 bytes exceeds 8388608"  # gRPC's own code for a message over a limit


class Refusing(hub_pb2_grpc.AnnotationHubServicer):
    """A hub stand-in refusing every Submit with RESOURCE_EXHAUSTED and `detail`, as the hub words its refusals."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.asked = threading.Event()

    def Submit(self, request: hub_pb2.AnnotationRequest, context: grpc.ServicerContext  # noqa: N802 (gRPC API)
               ) -> Iterator[hub_pb2.SampleReply]:
        self.asked.set()
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.detail)
        yield from ()


@pytest.mark.parametrize("detail", [CAPPED, TOO_LARGE])
def test_resource_exhausted_is_not_now_only_under_a_per_device_cap(detail: str) -> None:
    """The hub's per-device cap says 'not now' to this device: the samples stay for the resend scan and the link
    is not reported down (it marked the hub unreachable, which the adaptation reads as the hub away). The same code
    for a message over a size limit is a fault, named on the link."""
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    hub = Refusing(detail)
    hub_pb2_grpc.add_AnnotationHubServicer_to_server(hub, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    states: list[tuple] = []
    transport = open_transport(HubConfig(url=f"grpc://127.0.0.1:{port}"), "cam-1",
                               TransportCallbacks(lambda reply: None, lambda notice: None,
                                                  lambda *state: states.append(state)))
    try:
        transport.start()
        assert transport.send(hub_pb2.AnnotationRequest(batch_id="b-1", device_id="cam-1",
                                                        samples=[hub_pb2.Sample(sample_id="s-1")]))
        assert hub.asked.wait(WAIT_S)
        if detail == CAPPED:
            assert wait_until(lambda: not transport.in_flight(), WAIT_S)  # the call ended: its samples left
            assert all(state[0].name != "DISCONNECTED" for state in states), states
        else:
            assert wait_until(lambda: any(detail in str(state[2]) for state in states), WAIT_S), states
    finally:
        transport.stop()
        server.stop(None)
