"""What one enrolled device may hold of the hub's gRPC server, over real gRPC on loopback against a real hub (HubApp):

1. calls that never send their request message: a device with a valid credential opened max_workers of them and
   every other device's ReportStatus and Submit timed out (the hub proved the credential, then waited for the
   message with no limit, and counted Submit streams only once it came). Now each call takes one of the device's
   `grpc.max_calls_per_device` slots before its message is awaited, and a message that does not come within
   `grpc.request_read_timeout_s` gets the call cancelled; a Submit's message, a batch of images, has its own, long
   `grpc.submit_read_timeout_s` (10 s cancelled every Submit still uploading over a slow link), and a new
   WatchUpdates call of a device at its cap takes over its older watch's slot (a reconnecting agent);
2. a DeviceStatus of megabytes was decoded and stored whole on every call: `grpc.max_status_bytes` caps it.

Synchronisation is on the calls' own completion (futures) and the hub's counters, never on sleeps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hgen.hub.app import HubApp
from hgen.hub.kb.models import Device
from hgen.hub.kb.store import BundleRecord
from hgen.hub.testing.device import grpc_hub, grpc_target
from hgen.hub.testing.samples import make_request, make_sample
from hgen.hub.testing.services import wait_until
from hgen.hub.transports.grpc_server import SERVICE_NAME, GrpcTransport
from hgen.protos import hub_pb2, hub_pb2_grpc

A, B = "cam-a", "cam-b"
CALL_TIMEOUT_S = 10.0  # a generous bound for a call that must be served; the old hub never served it
HELD_S = 120.0  # deadline of the calls a test holds open itself (it cancels them)


def start(tmp_path: Path, **grpc_settings: Any) -> tuple[HubApp, dict[str, Any]]:
    return grpc_hub(tmp_path / "hub.db", [A, B], **grpc_settings)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[HubApp, dict[str, Any]]]:
    app, creds = start(tmp_path, request_read_timeout_s=HELD_S)  # held calls stay held while the test looks
    try:
        yield app, creds
    finally:
        app.stop()


target_of = grpc_target


def as_device(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Silent:
    """Request streams that send nothing until `release` (then half-close): calls that never send their message."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def requests(self) -> Iterator[bytes]:
        self.released.wait()
        return
        yield b""  # a generator

    def release(self) -> None:
        self.released.set()


def ended(calls: list[Any]) -> queue.Queue[Any]:
    """A queue that receives each call as it ends (gRPC calls are futures)."""
    done: queue.Queue[Any] = queue.Queue()
    for call in calls:
        call.add_done_callback(done.put)
    return done


def status_code(stub: hub_pb2_grpc.AnnotationHubStub, device: str, token: str,
                status: hub_pb2.DeviceStatus | None = None) -> tuple[grpc.StatusCode, str]:
    try:
        stub.ReportStatus(status or hub_pb2.DeviceStatus(device_id=device), metadata=as_device(token),
                          timeout=CALL_TIMEOUT_S)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]


# --- 1. calls without their message ----------------------------------------------------------------------------------


def test_a_device_holding_message_less_calls_is_capped_and_the_others_are_served(hub) -> None:
    """A opens max_workers calls (Submit up to its stream cap, the rest ReportStatus) and sends no message: the
    calls past max_calls_per_device are refused with RESOURCE_EXHAUSTED, and B's ReportStatus and Submit are
    served while A holds the rest. When A's calls end, A's slots come back."""
    app, creds = hub
    grpc_config = app.config.grpc
    cap = grpc_config.max_calls_per_device
    assert cap < grpc_config.max_workers
    servicer = app.transport(GrpcTransport).servicer
    silent = Silent()
    with grpc.insecure_channel(target_of(app)) as a_channel, grpc.insecure_channel(target_of(app)) as b_channel:
        methods = ["Submit"] * grpc_config.max_submit_streams_per_device
        methods += ["ReportStatus"] * (grpc_config.max_workers - len(methods))
        calls = [a_channel.stream_stream(f"/{SERVICE_NAME}/{method}")(
                     silent.requests(), metadata=as_device(creds[A].bearer), timeout=HELD_S) for method in methods]
        done = ended(calls)
        try:
            refused = [done.get(timeout=CALL_TIMEOUT_S) for _ in range(len(calls) - cap)]
            for call in refused:
                assert call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "max_calls_per_device" in call.details()
            assert servicer.calls.held(A) == cap  # the others hold their slots, waiting for their messages
            assert app.service.metrics.get("grpc_calls_capped") == len(refused)

            b_stub = hub_pb2_grpc.AnnotationHubStub(b_channel)
            assert status_code(b_stub, B, creds[B].bearer) == (grpc.StatusCode.OK, "")
            sample, bad = make_sample(B), make_sample(B, sample_id="not-a-uuid")
            b_submit = b_stub.Submit(make_request(B, [sample, bad], m=1), metadata=as_device(creds[B].bearer),
                                     timeout=CALL_TIMEOUT_S)
            try:
                assert next(b_submit).sample_id == "not-a-uuid"  # its immediate rejection: the stream is served
                assert wait_until(lambda: app.service.kb.sample_exists(sample.sample_id), CALL_TIMEOUT_S)
            finally:
                b_submit.cancel()
            # A itself, at its cap: refused, not parked
            code, details = status_code(hub_pb2_grpc.AnnotationHubStub(a_channel), A, creds[A].bearer)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_calls_per_device" in details
        finally:
            silent.release()  # A's held calls half-close without a message: INVALID_ARGUMENT, slots given back
            for _ in range(cap):
                done.get(timeout=CALL_TIMEOUT_S)
        assert wait_until(lambda: servicer.calls.held(A) == 0, CALL_TIMEOUT_S)
        assert status_code(hub_pb2_grpc.AnnotationHubStub(a_channel), A, creds[A].bearer) == (grpc.StatusCode.OK, "")


def test_a_call_whose_message_never_comes_is_cancelled_after_the_read_timeout(tmp_path: Path) -> None:
    """Within its cap a device could still keep threads for as long as the deadline it chose: a call whose
    message does not come within grpc.request_read_timeout_s (Submit: grpc.submit_read_timeout_s) is cancelled,
    its slot and thread freed."""
    app, creds = start(tmp_path, request_read_timeout_s=0.5, submit_read_timeout_s=0.5)
    servicer = app.transport(GrpcTransport).servicer
    silent = Silent()
    try:
        with grpc.insecure_channel(target_of(app)) as channel:
            calls = [channel.stream_stream(f"/{SERVICE_NAME}/{method}")(
                         silent.requests(), metadata=as_device(creds[A].bearer), timeout=HELD_S)
                     for method in ("ReportStatus", "Submit", "FetchBundle", "WatchUpdates")]
            done = ended(calls)
            for _ in calls:
                call = done.get(timeout=CALL_TIMEOUT_S * 3)  # long before HELD_S, its own deadline
                assert call.code() == grpc.StatusCode.CANCELLED
            assert app.service.metrics.get("grpc_request_read_timeouts") == len(calls)
            assert wait_until(lambda: servicer.calls.held(A) == 0, CALL_TIMEOUT_S)
            # a call that sends its message is served as before
            assert status_code(hub_pb2_grpc.AnnotationHubStub(channel), A, creds[A].bearer) == \
                (grpc.StatusCode.OK, "")
    finally:
        silent.release()
        app.stop()


def test_a_submit_still_uploading_after_the_short_read_timeout_is_served(tmp_path: Path) -> None:
    """gRPC starts the handler when the call arrives, so the read timeout counts the client's upload: a default
    agent batch (8 full frames, ~4.5 MB) over a slow uplink took longer than grpc.request_read_timeout_s and every
    Submit was cancelled, its samples never stored. Submit now waits grpc.submit_read_timeout_s for its message:
    here its message is held back until another call's short timeout has visibly fired, then served."""
    app, creds = start(tmp_path, request_read_timeout_s=0.5, submit_read_timeout_s=HELD_S)
    servicer = app.transport(GrpcTransport).servicer
    silent, uploaded = Silent(), threading.Event()
    sample, bad = make_sample(A), make_sample(A, sample_id="not-a-uuid")

    def slow_upload() -> Iterator[hub_pb2.AnnotationRequest]:
        uploaded.wait()
        yield make_request(A, [sample, bad], m=1)

    try:
        with grpc.insecure_channel(target_of(app)) as channel:
            submit = channel.stream_stream(f"/{SERVICE_NAME}/Submit",
                                           request_serializer=hub_pb2.AnnotationRequest.SerializeToString,
                                           response_deserializer=hub_pb2.SampleReply.FromString)(
                slow_upload(), metadata=as_device(creds[A].bearer), timeout=HELD_S)
            # the Submit waits for its message first; a ReportStatus that sends none waits after it
            assert wait_until(lambda: servicer.reads.waiting() == 1, CALL_TIMEOUT_S)
            status = channel.stream_stream(f"/{SERVICE_NAME}/ReportStatus")(
                silent.requests(), metadata=as_device(creds[A].bearer), timeout=HELD_S)
            assert ended([status]).get(timeout=CALL_TIMEOUT_S * 3).code() == grpc.StatusCode.CANCELLED
            assert app.service.metrics.get("grpc_request_read_timeouts") == 1  # the status call's only
            uploaded.set()  # the upload completes, past the short timeout
            try:
                assert next(submit).sample_id == "not-a-uuid"  # its immediate rejection: the stream is served
                assert wait_until(lambda: app.service.kb.sample_exists(sample.sample_id), CALL_TIMEOUT_S)
            finally:
                submit.cancel()
            assert app.service.metrics.get("grpc_request_read_timeouts") == 1
    finally:
        uploaded.set()
        silent.release()
        app.stop()


def test_a_new_watch_of_a_device_at_its_call_cap_takes_over_its_older_watch(hub) -> None:
    """A reconnecting agent's old calls may still be counted (the hub has not noticed the old connection is
    dead): its new WatchUpdates stream, which ends the older one anyway, is served in the older one's slot instead
    of being refused by grpc.max_calls_per_device; the older ends ABORTED, and every slot comes back once."""
    app, creds = hub
    servicer = app.transport(GrpcTransport).servicer
    cap = app.config.grpc.max_calls_per_device
    record = BundleRecord("m", "1.0.0", "ab" * 32, 12, b"", "/nowhere/m.hgb", 1.0)
    app.service.kb.add_bundle(record)
    watch = hub_pb2.WatchUpdatesRequest(device_id=A, bundle_name="m")
    silent = Silent()
    with grpc.insecure_channel(target_of(app)) as old_channel, grpc.insecure_channel(target_of(app)) as new_channel:
        old_watch = hub_pb2_grpc.AnnotationHubStub(old_channel).WatchUpdates(
            watch, metadata=as_device(creds[A].bearer), timeout=HELD_S)
        held = [old_channel.stream_stream(f"/{SERVICE_NAME}/ReportStatus")(
                    silent.requests(), metadata=as_device(creds[A].bearer), timeout=HELD_S) for _ in range(cap - 1)]
        new_watch = None
        try:
            assert next(old_watch).version == "1.0.0"  # its watch is open
            assert wait_until(lambda: servicer.calls.held(A) == cap, CALL_TIMEOUT_S)
            older = servicer.calls.watching(A)
            assert older is not None

            new_watch = hub_pb2_grpc.AnnotationHubStub(new_channel).WatchUpdates(
                watch, metadata=as_device(creds[A].bearer), timeout=HELD_S)
            assert next(new_watch).version == "1.0.0"  # served, not RESOURCE_EXHAUSTED
            with pytest.raises(grpc.RpcError) as replaced:
                for _ in old_watch:
                    pass
            assert replaced.value.code() == grpc.StatusCode.ABORTED
            assert servicer.calls.watching(A) not in (None, older)
            assert servicer.calls.held(A) == cap  # the new watch in the older one's slot
            assert app.service.metrics.get("grpc_calls_capped") == 0
            assert app.service.metrics.get("grpc_watch_replaced") == 1
            # a call of another kind at the cap is still refused
            code, details = status_code(hub_pb2_grpc.AnnotationHubStub(new_channel), A, creds[A].bearer)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_calls_per_device" in details
        finally:
            silent.release()
            if new_watch is not None:
                new_watch.cancel()
            done = ended(held)
            for _ in held:
                done.get(timeout=CALL_TIMEOUT_S)
        assert wait_until(lambda: servicer.calls.held(A) == 0, CALL_TIMEOUT_S)  # each slot given back once
        assert status_code(hub_pb2_grpc.AnnotationHubStub(new_channel), A, creds[A].bearer) == \
            (grpc.StatusCode.OK, "")


# --- 2. status size --------------------------------------------------------------------------------------------------


def test_a_status_over_max_status_bytes_is_refused_and_counted_and_not_stored(hub) -> None:
    """A 6 MiB DeviceStatus (300,000 metrics) took about a second per call and was stored whole on the device's
    row; the operator page read it at every refresh. One over grpc.max_status_bytes is refused before decoding."""
    app, creds = hub
    cap = app.config.grpc.max_status_bytes
    assert cap < app.config.grpc.max_message_bytes
    with grpc.insecure_channel(target_of(app)) as channel:
        stub = hub_pb2_grpc.AnnotationHubStub(channel)
        usual = hub_pb2.DeviceStatus(device_id=A, online=True, bundle_name="lenet5", bundle_version="1.0.0",
                                     metrics={f"metric_{i:03d}": float(i) for i in range(100)})
        assert usual.ByteSize() < cap
        assert status_code(stub, A, creds[A].bearer, usual) == (grpc.StatusCode.OK, "")
        huge = hub_pb2.DeviceStatus(device_id=A, metrics={f"m{i:07d}": float(i) for i in range(cap // 10)})
        assert huge.ByteSize() > cap
        code, details = status_code(stub, A, creds[A].bearer, huge)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "grpc.max_status_bytes" in details
        assert app.service.metrics.get("status_too_large") == 1
        with app.service.kb.session() as session:
            stored = hub_pb2.DeviceStatus.FromString(session.get(Device, A).last_status)
        assert stored == usual
