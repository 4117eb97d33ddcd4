"""Faults a wire review found in the hub, each reproduced over real gRPC on loopback against a real hub (HubApp):

1. a refusal was addressed to the device a sample names, not to the sender (over MQTT: another device's topic);
2. NaN, infinity or an out-of-range Timestamp in a request failed inside the knowledge base (UNKNOWN);
3. a huge device-id claim was kept forever and echoed into the status text (RESOURCE_EXHAUSTED);
4. anonymous calls that never send their message parked every server thread before the credential check ran;
5. a fleet of watchers (one WatchUpdates stream per device) filled the pool and other devices' calls timed out;
6. FetchBundle with a resume offset past 2**63 failed with UNKNOWN.
"""

from __future__ import annotations

import hashlib
import logging
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.kb.store import BundleRecord, bundle_notice
from hgen.hub.testing.device import enroll, grpc_hub, grpc_target
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import wait_until
from hgen.hub.transports.grpc_auth import OnceLog
from hgen.hub.transports.grpc_server import SERVICE_NAME, GrpcTransport
from hgen.protos import hub_pb2, hub_pb2_grpc

A, B = "cam-a", "cam-b"
FLEET = [f"cam-{i:02d}" for i in range(17)]  # one more than the default pool (grpc.max_workers 16)
CALL_TIMEOUT_S = 10.0  # a generous bound for a call that must be served; the old hub never served it


def start(tmp_path: Path, devices: list[str]) -> tuple[HubApp, dict[str, Any]]:
    return grpc_hub(tmp_path / "hub.db", devices)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[HubApp, dict[str, Any]]]:
    app, creds = start(tmp_path, [A, B])
    try:
        yield app, creds
    finally:
        app.stop()


target_of = grpc_target


@pytest.fixture
def stub(hub: tuple[HubApp, dict[str, Any]]) -> Iterator[hub_pb2_grpc.AnnotationHubStub]:
    with grpc.insecure_channel(target_of(hub[0])) as channel:
        yield hub_pb2_grpc.AnnotationHubStub(channel)


def as_device(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def status_code(stub: hub_pb2_grpc.AnnotationHubStub, device: str, token: str, claimed: str | None = None
                ) -> tuple[grpc.StatusCode, str]:
    try:
        stub.ReportStatus(hub_pb2.DeviceStatus(device_id=device if claimed is None else claimed),
                          metadata=as_device(token), timeout=CALL_TIMEOUT_S)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]


def submit(stub: hub_pb2_grpc.AnnotationHubStub, token: str,
           request: hub_pb2.AnnotationRequest) -> list[hub_pb2.SampleReply]:
    """The replies of a request the hub refuses outright (every sample's reply is immediate)."""
    return list(stub.Submit(request, metadata=as_device(token), timeout=CALL_TIMEOUT_S))


# --- 1. refusals go to the sender ----------------------------------------------------------------------------------


def naming_b() -> hub_pb2.Sample:
    sample = make_sample(A)
    sample.device_id = B
    return sample


def test_a_refusal_is_addressed_to_the_sender_not_to_the_device_its_sample_names(hub, stub) -> None:
    """The MQTT transport publishes a reply on the topic of its `device_id`: A's sample naming B made the hub
    publish A's refusal (with a sample id A chose) on B's reply topic, and B settled its waiting sample."""
    app, creds = hub
    sample_refused = make_request(A, [naming_b()], m=1)
    request_refused = make_request(A, [naming_b()], m=0)  # refused as a whole: every sample gets a reply
    for request in (sample_refused, request_refused):
        # as the MQTT transport hands it over: the topic's device is the authenticated sender
        result = app.service.submit_payload(request.SerializeToString(), "mqtt", 1 << 20, sender=A)
        assert [(r.status, r.device_id) for r in result.immediate] == [(hub_pb2.REPLY_STATUS_REJECTED, A)]
        (reply,) = submit(stub, creds[A].bearer, request)
        assert (reply.status, reply.device_id) == (hub_pb2.REPLY_STATUS_REJECTED, A)


# --- 2. out-of-range numbers are bad input ------------------------------------------------------------------------


def _request(**changes: Any) -> hub_pb2.AnnotationRequest:
    sample = make_sample(A)
    for path, value in changes.items():
        owner_path, _, name = path.rpartition(".")
        owner: Any = sample
        for part in filter(None, owner_path.split(".")):
            owner = getattr(owner, part)
        if name == "class_probabilities":
            owner.class_probabilities.append(value)
        elif name == "boxes":
            owner.boxes.add(x_min=value)
        else:
            setattr(owner, name, value)
    return make_request(A, [sample], m=1)


def _with_request(name: str, value: Any) -> hub_pb2.AnnotationRequest:
    request = make_request(A, [make_sample(A)], m=1)
    owner_name, _, field = name.rpartition(".")
    setattr(getattr(request, owner_name) if owner_name else request, field, value)
    return request


NAN, INF = float("nan"), float("inf")
OUT_OF_RANGE = {
    "labour_budget nan": (_with_request("labour_budget", NAN), "labour_budget"),
    "labour_budget inf": (_with_request("labour_budget", INF), "labour_budget"),
    "labour_budget negative": (_with_request("labour_budget", -1.0), "labour_budget"),
    "deadline past year 9999": (_with_request("deadline.seconds", 2**62), "deadline"),
    "sent_at before year 1": (_with_request("sent_at.seconds", -2**62), "sent_at"),
    "sent_at past year 9999": (_with_request("sent_at.seconds", 2**62), "sent_at"),
    "confidence nan": (_request(**{"output.confidence": NAN}), "output.confidence"),
    "confidence -inf": (_request(**{"output.confidence": -INF}), "output.confidence"),
    "a probability nan": (_request(**{"output.class_probabilities": NAN}), "output.class_probabilities"),
    "a box coordinate inf": (_request(**{"output.boxes": INF}), "output.boxes[0]"),
    "captured_at past year 9999": (_request(**{"captured_at.seconds": 2**62}), "captured_at"),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_out_of_range_numbers_are_refused_as_invalid_naming_the_field(hub, stub, case: str) -> None:
    """Before: KnowledgeBaseIntegrityError (SQLite keeps NaN as NULL) or protobuf's ValueError, and the device got
    UNKNOWN 'Exception iterating responses'; over MQTT the ingest worker retried the message for seconds."""
    app, creds = hub
    request, field = OUT_OF_RANGE[case]
    (reply,) = submit(stub, creds[A].bearer, request)
    assert reply.status == hub_pb2.REPLY_STATUS_REJECTED
    assert reply.reject_reason == hub_pb2.REJECT_REASON_INVALID_REQUEST
    assert reply.detail.startswith(field)
    assert app.service.metrics.get("invalid_request") == 1
    assert status_code(stub, A, creds[A].bearer) == (grpc.StatusCode.OK, "")  # and the hub serves on


# --- 3. a huge claim -------------------------------------------------------------------------------------------------


def test_a_huge_device_claim_is_denied_with_a_short_text_and_logged_boundedly(hub, stub, caplog) -> None:
    """Each distinct claim was kept whole forever and echoed into the status text: a 1 MiB claim made the status
    too large for gRPC's metadata (RESOURCE_EXHAUSTED) and 300 of them held 300 MiB. (A status that large is now
    refused for its size, grpc.max_status_bytes: these claims are 32 KiB, still four times gRPC's metadata limit.)"""
    app, creds = hub
    app.service._mismatches_logged = OnceLog(limit=3)
    caplog.set_level(logging.WARNING, logger="hgen.hub.service")
    claim_chars = 1 << 15
    assert claim_chars < app.config.grpc.max_status_bytes
    for i in range(6):
        code, details = status_code(stub, A, creds[A].bearer, claimed=f"{i:04d}" + "x" * claim_chars)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert len(details) < 512 and f"{i:04d}x" in details
    assert len(app.service._mismatches_logged) <= 4  # the limit, plus the key whose arrival said it stops
    assert app.service.metrics.get("device_impersonation") == 6
    assert all(len(r.getMessage()) < 1024 for r in caplog.records)
    assert len([r for r in caplog.records if "sent a message as" in r.getMessage()]) == 3


# --- 4. anonymous half-open calls -------------------------------------------------------------------------------------


def test_anonymous_calls_that_send_no_message_are_refused_without_holding_threads(hub, stub) -> None:
    """The credential check ran in the handler, which the sync server calls only once the request message came:
    max_workers anonymous calls that never sent one held every thread and A's calls timed out."""
    app, creds = hub
    never: queue.Queue[bytes | None] = queue.Queue()
    channel = grpc.insecure_channel(target_of(app))
    try:
        for method in ("Submit", "WatchUpdates", "FetchBundle", "ReportStatus"):
            half_open = channel.stream_stream(f"/{SERVICE_NAME}/{method}")
            # no token, one no device could have (refused by the interceptor), or a well-formed false one (an
            # enrolled device's id with a wrong secret, an unknown device's: proved on a pool thread before the
            # handler waits for the message)
            for metadata in ((), as_device(f"{A}-no-secret"), as_device("no such device:x"),
                             as_device(f"{A}:not-its-secret"), as_device("cam-unknown:some-secret")):
                calls = [half_open(iter(never.get, None), metadata=metadata, timeout=CALL_TIMEOUT_S)
                         for _ in range(app.config.grpc.max_workers)]
                for call in calls:
                    with pytest.raises(grpc.RpcError) as refused:
                        next(call)
                    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert status_code(stub, A, creds[A].bearer) == (grpc.StatusCode.OK, "")
        # the checks that need the message still run: A may not speak for B
        assert status_code(stub, A, creds[A].bearer, claimed=B)[0] == grpc.StatusCode.PERMISSION_DENIED
    finally:
        never.put(None)
        channel.close()


def test_a_call_that_ends_without_its_message_is_invalid_argument(hub) -> None:
    """The handlers take their request as a stream of one (to prove the caller before waiting for it): a proved
    call that half-closes without a message gets a typed refusal, and the hub keeps serving."""
    app, creds = hub
    with grpc.insecure_channel(target_of(app)) as channel:
        for method in ("Submit", "ReportStatus"):
            empty = channel.stream_stream(f"/{SERVICE_NAME}/{method}")
            with pytest.raises(grpc.RpcError) as refused:
                next(empty(iter(()), metadata=as_device(creds[A].bearer), timeout=CALL_TIMEOUT_S))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "without its request message" in refused.value.details()
        assert status_code(hub_pb2_grpc.AnnotationHubStub(channel), A, creds[A].bearer) == (grpc.StatusCode.OK, "")


# --- 5. a fleet of watchers -------------------------------------------------------------------------------------------


def test_a_fleet_larger_than_the_watch_slots_polls_and_other_calls_are_served(tmp_path: Path) -> None:
    """16 devices each holding its one WatchUpdates stream took every thread of the default pool: the 17th
    device's ReportStatus timed out. Now watchers past `watch_slots` get the newer bundle, then RESOURCE_EXHAUSTED
    (call again later), and every other call is served."""
    app, creds = start(tmp_path, FLEET)
    try:
        record = BundleRecord("m", "1.0.0", "ab" * 32, 12, b"", "/nowhere/m.hgb", 1.0)
        app.service.kb.add_bundle(record)
        app.transport(GrpcTransport).announce(bundle_notice(record), FLEET)
        slots = app.transport(GrpcTransport).servicer.watch_slots
        assert slots < len(FLEET) - 1
        with grpc.insecure_channel(target_of(app)) as channel:
            stub = hub_pb2_grpc.AnnotationHubStub(channel)
            watches = []
            try:
                for device in FLEET[:-1]:  # one after the other: the first `slots` take the slots
                    watches.append(stub.WatchUpdates(hub_pb2.WatchUpdatesRequest(device_id=device, bundle_name="m"),
                                                     metadata=as_device(creds[device].bearer), timeout=60))
                    assert next(watches[-1]).version == "1.0.0"  # a slot or a poll: told of the bundle either way
                for call in watches[slots:]:
                    with pytest.raises(grpc.RpcError) as polled:
                        next(call)
                    assert polled.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "call again" in polled.value.details()
                last = FLEET[-1]
                assert status_code(stub, last, creds[last].bearer) == (grpc.StatusCode.OK, "")
                assert app.service.metrics.get("grpc_watch_streams_capped") == len(watches) - slots
            finally:
                for call in watches:
                    call.cancel()
    finally:
        app.stop()


# --- 6. a resume offset past the bundle ----------------------------------------------------------------------------


def test_fetch_past_the_end_of_a_bundle_is_out_of_range(hub, stub, tmp_path: Path) -> None:
    app, creds = hub
    data = b"x" * 1000
    path = tmp_path / "b.hgb"
    path.write_bytes(data)
    app.service.kb.add_bundle(BundleRecord("lenet5", "1.0.1", hashlib.sha256(data).hexdigest(), len(data), b"sig",
                                           str(path), 1.0, archive=data))

    def fetch(offset: int) -> list[hub_pb2.BundleChunk]:
        return list(stub.FetchBundle(hub_pb2.BundleRequest(bundle_name="lenet5", version="1.0.1", offset=offset),
                                     metadata=as_device(creds[A].bearer), timeout=CALL_TIMEOUT_S))

    assert b"".join(c.data for c in fetch(500)) == data[500:]
    assert fetch(len(data)) == []  # everything received already: nothing more
    for offset in (len(data) + 1, 2**63, 2**64 - 1):
        with pytest.raises(grpc.RpcError) as refused:
            fetch(offset)
        assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert str(len(data)) in refused.value.details()


def test_streams_of_many_devices_filling_the_pool_are_counted_and_warned_once(tmp_path: Path, caplog) -> None:
    """Each device under its own caps, together they held every thread and other calls waited without a word: the
    pool running low is counted (grpc_pool_nearly_full) and warned of once, naming the setting."""
    fleet = [f"cam-{i}" for i in range(8)]
    app = HubApp(parse_hub_config({"devices": fleet, "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                                   "grpc": {"port": 0, "max_workers": 11}})).start()  # low at 11 - 4 = 7 calls
    creds = enroll(app, *fleet)
    calls = []
    try:
        with grpc.insecure_channel(target_of(app)) as channel, caplog.at_level(logging.WARNING):
            stub = hub_pb2_grpc.AnnotationHubStub(channel)
            for device in fleet[:7]:  # one Submit each, waiting for people who never answer
                calls.append(stub.Submit(make_request(device, [make_sample(device)]),
                                         metadata=as_device(creds[device].bearer), timeout=CALL_TIMEOUT_S))

            def warned() -> list[logging.LogRecord]:  # the call's thread counts first, then logs
                return [r for r in caplog.records if "grpc_pool_nearly_full" in r.getMessage()]

            assert wait_until(lambda: len(warned()) >= 1)
            assert app.service.metrics.snapshot().get("grpc_pool_nearly_full", 0) >= 1
            assert len(warned()) == 1 and "raise grpc.max_workers" in warned()[0].getMessage()
    finally:
        for call in calls:
            call.cancel()
        app.stop()
