"""gRPC transport: the AnnotationHub service plus grpc.health.v1, with explicit message-size limits.

Handlers are built with our own request deserializers so a malformed or oversized message becomes a typed,
counted error (INVALID_ARGUMENT / RESOURCE_EXHAUSTED) instead of an anonymous failure inside gRPC. gRPC's own
receive limit is set to twice the configured cap: between the two our check answers; beyond, gRPC refuses.
Every call must prove a device and may speak only for it (see grpc_auth): a call without a credential is refused by
an interceptor, and a false one on a pool thread, before any thread waits for its message; the health service
stays open.
Every call parks a server thread, a stream for as long as it is open, and a call waiting for its request message
too, so no device may hold many (`DeviceCalls`): a proved call takes one of its device's
`grpc.max_calls_per_device` slots before its message is read, and within those at most
`grpc.max_submit_streams_per_device` Submit and `grpc.max_fetch_streams_per_device` FetchBundle streams, and one
WatchUpdates stream (the newest wins, and at the cap takes over the older one's slot); beyond, RESOURCE_EXHAUSTED.
A message that does not arrive within `grpc.request_read_timeout_s` (Submit: `grpc.submit_read_timeout_s`, its
message being a batch of images the client may take minutes to upload) gets the call cancelled (`ReadTimeouts`), so
even slots within the cap are given back.
The config refuses a pool too small to serve others while one device holds all its slots (`GrpcConfig`). The whole
fleet's WatchUpdates streams are capped too (`watch_slots`): past it a watcher is answered once (the newer bundle,
if any) and told to call again, so a fleet larger than the pool polls for updates rather than holding every thread.
ReportStatus messages have their own, smaller cap (`grpc.max_status_bytes`): a status is stored whole on the
device's row, which the operator page reads at every refresh.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hgen.hub.transport_config import FREE_WORKERS, GrpcConfig, GrpcTlsConfig
from hgen.hub.devices import DeviceCredentials
from hgen.hub.bundle_files import open_archive
from hgen.hub.errors import (BadInputError, BundleMissingError, HubConfigError, MalformedMessageError,
                             MessageTooLargeError, StatusTooLargeError, UnknownDeviceError)
from hgen.hub.kb.store import BundleRecord, bundle_notice
from hgen.hub.service import HubService
from hgen.hub.transports import HUB_TRANSPORTS
from hgen.hub.transports.base import HubTransport
from hgen.hub.transports.agent_versions import AgentVersions
from hgen.hub.transports.grpc_auth import CallerCheck, CredentialGate
from hgen.hub.transports.grpc_calls import CallCapped, DeviceCalls, PendingRead, ReadTimeouts, Slot, Watch
from hgen.hub.validation import clip
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
SERVICE_NAME = "hgen.v1.AnnotationHub"
TRANSPORT = "grpc"
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class _Refused:
    """Stands in for a request that failed to decode; the handler turns it into a status code."""

    error: BadInputError


def _first(requests: Iterator[object], context: grpc.ServicerContext) -> object:
    """The call's request message: a unary request is a stream of one on the wire, so the handlers take it as a
    stream and prove the caller before they wait for it. A call that ends without one is INVALID_ARGUMENT."""
    for request in requests:
        return request
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call ended without its request message")
    raise AssertionError("unreachable: abort raises")


def _deserializer(message: type, max_bytes: int, too_large: type[MessageTooLargeError] = MessageTooLargeError,
                  setting: str = "grpc.max_message_bytes") -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        if len(data) > max_bytes:
            return _Refused(too_large(f"{message.__name__} of {len(data)} bytes exceeds {max_bytes} ({setting})"))
        try:
            return message.FromString(data)
        except Exception as exc:  # protobuf DecodeError and friends
            return _Refused(MalformedMessageError(f"not an hgen.v1.{message.__name__}: {exc}"))

    return parse


class AnnotationHubServicer:
    """Implements the four RPCs on top of HubService."""

    def __init__(self, service: HubService, config: GrpcConfig, stopping: threading.Event) -> None:
        self.service = service
        self.config = config
        self._stopping = stopping
        self.calls = DeviceCalls(config.max_calls_per_device,
                                 {DeviceCalls.SUBMIT: config.max_submit_streams_per_device,
                                  DeviceCalls.FETCH: config.max_fetch_streams_per_device})
        self.reads = ReadTimeouts(config.request_read_timeout_s, self._read_timed_out,
                                  {DeviceCalls.SUBMIT: config.submit_read_timeout_s})
        self._capped_logged: set[tuple[str, str]] = set()  # (setting, device): devices are enrolled, so bounded
        self._read_logged: set[str] = set()  # devices whose read timeout was logged
        self.watch_slots = watch_slots(config)
        self._watch_cap_logged = False
        self._pool_logged = False
        self.fetch_uri = config.advertise_url or ""  # set to the bound address at start when not configured
        self.callers = CallerCheck(service, DeviceCredentials(service.kb))
        self.agents = AgentVersions(service.metrics.inc)  # which agent each device runs, from its status

    def proved(self, kind: str, method: Callable[..., object]
               ) -> Callable[[Iterator[object], grpc.ServicerContext], object]:
        """`method(request, context, device)` for the `kind` RPC (WatchUpdates: also its call's slot), run once the
        call's credential proved `device` (checked against the knowledge base on a pool thread), it took one of the
        device's call slots, and only then its request message was read (within grpc.request_read_timeout_s, Submit
        grpc.submit_read_timeout_s). A call with a false credential that never sends its message is refused at once
        (the interceptor, `CredentialGate`, can only refuse calls with no or a malformed credential); a device's
        calls past its caps are refused before their message is awaited, so one device cannot park every thread;
        the slot is given back when the call ends (a stream: when its handler's generator ends)."""
        if kind == DeviceCalls.STATUS:  # request-streaming, unary response
            def run_unary(requests: Iterator[object], context: grpc.ServicerContext) -> object:
                device = self.callers.caller(context)
                slot = self._take_slot(kind, device, context)
                try:
                    return method(self._read(requests, context, kind, device), context, device)
                finally:
                    self.calls.release(slot)
            return run_unary

        def run_stream(requests: Iterator[object], context: grpc.ServicerContext) -> Iterator[object]:
            device = self.callers.caller(context)
            slot = self._take_slot(kind, device, context)
            extra = (slot,) if kind == DeviceCalls.WATCH else ()
            try:
                request = self._read(requests, context, kind, device)
                yield from method(request, context, device, *extra)  # type: ignore[misc]
            finally:
                self.calls.release(slot)
        return run_stream

    def _read(self, requests: Iterator[object], context: grpc.ServicerContext, kind: str, device: str) -> object:
        """The call's request message, if it arrives within its kind's read timeout; else the call is cancelled
        (counted, logged once per device) and its handler ends here."""
        read = self.reads.arm(context, kind, device)
        try:
            return _first(requests, context)  # raises grpc.RpcError when the call is cancelled (by either side)
        finally:
            if not self.reads.disarm(read):  # the call is cancelled already (its client sees CANCELLED): end here
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._read_message(read))

    def _read_message(self, read: PendingRead) -> str:
        setting = "submit_read_timeout_s" if read.kind == DeviceCalls.SUBMIT else "request_read_timeout_s"
        return (f"{read.kind} of device {read.device!r} sent no request message within "
                f"{self.reads.timeout_of(read.kind):g} s (grpc.{setting}): cancelled")

    def _read_timed_out(self, read: PendingRead) -> None:
        """Counted and logged (once per device) on the timeout thread, before the call is cancelled."""
        self.service.metrics.inc("grpc_request_read_timeouts")
        if read.device not in self._read_logged:
            self._read_logged.add(read.device)
            log.warning("gRPC %s (logged once per device; counted as grpc_request_read_timeouts)",
                        self._read_message(read))

    def _refuse(self, request: object, context: grpc.ServicerContext) -> None:
        if isinstance(request, _Refused):
            error = request.error
            self.service.metrics.inc(error.code)
            log.warning("gRPC request refused (%s): %s", error.code, error)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(error, MessageTooLargeError) \
                else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(error))

    def _take_slot(self, kind: str, device: str, context: grpc.ServicerContext) -> Slot:
        """Take one of the device's call slots (and of its `kind` streams, for Submit and FetchBundle), or end the
        call with RESOURCE_EXHAUSTED (counted; logged once per device and setting): the caller gives it back when
        the call ends."""
        try:
            slot = self.calls.acquire(kind, device)
        except CallCapped as capped:
            setting = capped.setting
        else:
            self._check_pool()
            return slot
        if setting == "max_calls_per_device":
            self.service.metrics.inc("grpc_calls_capped")
            message = (f"device {device!r} already has {self.calls.total} calls open (grpc.{setting}): "
                       "retry when one ends")
        else:
            self.service.metrics.inc(f"grpc_{DeviceCalls.SHORT[kind]}_streams_capped")
            message = (f"device {device!r} already has {self.calls.caps[kind]} {kind} streams open "
                       f"(grpc.{setting}): retry when one ends")
        if (setting, device) not in self._capped_logged:
            self._capped_logged.add((setting, device))
            log.warning("gRPC %s refused: %s (logged once per device; counted in metrics)", kind, message)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        raise AssertionError("unreachable: abort raises")

    def _check_pool(self) -> None:
        """Calls of many devices at once (each under its own caps) can still hold the whole pool, and then every
        other call waits: counted when fewer than FREE_WORKERS threads are left, with one warning to size
        grpc.max_workers for the fleet."""
        if self.calls.open_count() < self.config.max_workers - FREE_WORKERS:
            return
        self.service.metrics.inc("grpc_pool_nearly_full")
        if not self._pool_logged:
            self._pool_logged = True
            log.warning("gRPC: open calls hold all but %d of grpc.max_workers %d threads; other calls will wait: "
                        "raise grpc.max_workers to about the number of devices x 2 + %d (logged once; counted as "
                        "grpc_pool_nearly_full)", FREE_WORKERS, self.config.max_workers, FREE_WORKERS)

    def Submit(self, request: hub_pb2.AnnotationRequest, context: grpc.ServicerContext,
               device: str) -> Iterator[hub_pb2.SampleReply]:
        self._refuse(request, context)
        self.callers.check_claim(device, request.device_id, context)
        yield from self._submit(request, context)

    def _submit(self, request: hub_pb2.AnnotationRequest,
                context: grpc.ServicerContext) -> Iterator[hub_pb2.SampleReply]:
        ids = [s.sample_id for s in request.samples]
        waiting = self.service.bus.subscribe(ids)  # before submit: no reply can slip between the two
        try:
            result = self.service.submit(request, TRANSPORT)
            yield from result.immediate
            yield from self._stream_replies(set(result.pending), waiting, context)
        finally:
            self.service.bus.unsubscribe(ids, waiting)

    def _stream_replies(self, remaining: set[str], waiting: queue.Queue,
                        context: grpc.ServicerContext) -> Iterator[hub_pb2.SampleReply]:
        while remaining and context.is_active() and not self._stopping.is_set():
            try:
                replies = [waiting.get(timeout=self.config.reply_poll_s)]
            except queue.Empty:  # made by another hub process, or just before we subscribed
                replies = self.service.kb.replies_for(sorted(remaining))
            for reply in replies:
                if reply.sample_id in remaining:
                    remaining.discard(reply.sample_id)
                    yield reply

    def FetchBundle(self, request: hub_pb2.BundleRequest, context: grpc.ServicerContext,
                    device: str) -> Iterator[hub_pb2.BundleChunk]:
        self._refuse(request, context)
        record = self.service.kb.bundle(request.bundle_name, request.version)
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no bundle {clip(request.bundle_name)!r} "
                                                     f"{clip(request.version)!r}")
        self.callers.check_target(device, record, context)
        if request.offset > record.size:  # a resume point past the end: seek() fails on offsets past 2**63
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} is past the end of bundle "
                                                        f"{record.name} {record.version} ({record.size} bytes)")
        yield from self._chunks(device, record, request, context)  # a client that stops reading parks the thread:
        # its FetchBundle slot (`proved`) bounds how many

    def _chunks(self, device: str, record: BundleRecord, request: hub_pb2.BundleRequest,
                context: grpc.ServicerContext) -> Iterator[hub_pb2.BundleChunk]:
        chunk = min(request.chunk_size or self.config.bundle_chunk_bytes, self.config.max_message_bytes // 2)
        try:
            handle = open_archive(self.service.kb, record)
        except BundleMissingError as exc:
            log.error("FetchBundle from %s: %s", device, exc)
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        with handle:
            handle.seek(request.offset)
            offset = request.offset
            while data := handle.read(chunk):
                yield hub_pb2.BundleChunk(offset=offset, data=data, total_size=record.size, sha256=record.sha256)
                offset += len(data)

    def WatchUpdates(self, request: hub_pb2.WatchUpdatesRequest, context: grpc.ServicerContext,
                     device: str, slot: Slot | None = None) -> Iterator[hub_pb2.ModelUpdate]:
        self._refuse(request, context)
        self.callers.check_claim(device, request.device_id, context)
        watch = self.calls.watch(device, self.watch_slots, slot)
        if watch is None:
            yield from self._poll_once(device, request, context)
            return
        self._check_pool()
        context.add_callback(watch.wake.set)  # a cancelled stream frees its thread now, not at its next poll
        try:
            yield from self._notices(device, request, watch, context)
        finally:
            self.calls.unwatch(device, watch)
        if watch.replaced:
            self.service.metrics.inc("grpc_watch_replaced")
            context.abort(grpc.StatusCode.ABORTED, f"a newer WatchUpdates stream of device {device!r} replaced "
                                                   "this one (one per device)")

    def _poll_once(self, device: str, request: hub_pb2.WatchUpdatesRequest,
                   context: grpc.ServicerContext) -> Iterator[hub_pb2.ModelUpdate]:
        """Every watch slot is taken: answer what a watch would say now, then end with RESOURCE_EXHAUSTED so the
        device calls again later (the edge agent does, backing off to 5 s): updates still reach it, by polling."""
        self.service.metrics.inc("grpc_watch_streams_capped")
        if not self._watch_cap_logged:
            self._watch_cap_logged = True
            log.warning("gRPC: %d devices hold WatchUpdates streams, all the pool of grpc.max_workers %d spares for "
                        "them; further watchers poll instead (metric grpc_watch_streams_capped): raise "
                        "grpc.max_workers to about the fleet size + %d to let every device watch (logged once)",
                        self.watch_slots, self.config.max_workers, self.config.max_workers - self.watch_slots)
        notice = self._newer_notice(device, request.bundle_name, request.known_version, context)
        if notice is not None:
            yield notice
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"the hub holds {self.watch_slots} WatchUpdates streams (grpc.max_workers "
                      f"{self.config.max_workers}): call again later to poll for updates")

    def _notices(self, device: str, request: hub_pb2.WatchUpdatesRequest, watch: Watch,
                 context: grpc.ServicerContext) -> Iterator[hub_pb2.ModelUpdate]:
        known = request.known_version
        while context.is_active() and not self._stopping.is_set() and not watch.replaced:
            watch.wake.clear()  # before reading: a change announced from here on wakes the wait below
            notice = self._newer_notice(device, request.bundle_name, known, context)
            if notice is not None:
                known = notice.version
                yield notice
            watch.wake.wait(timeout=self.config.reply_poll_s * 4)

    def _newer_notice(self, device: str, bundle_name: str, known: str,
                      context: grpc.ServicerContext) -> hub_pb2.ModelUpdate | None:
        """The notice of the device's newest bundle when it is not `known` (its target checked). This hub serves
        every recorded bundle (`bundle_files`), so it points the device at itself, not at the hub that published it,
        which may be down or on a disk this one does not share ('': the device's own hub link)."""
        record = self.callers.bundle_for(device, bundle_name)
        if record is None or record.version == known:
            return None
        self.callers.check_target(device, record, context)
        return bundle_notice(replace(record, fetch_uri=self.fetch_uri))

    def ReportStatus(self, request: hub_pb2.DeviceStatus, context: grpc.ServicerContext,
                     device: str) -> hub_pb2.StatusAck:
        self._refuse(request, context)
        self.callers.check_claim(device, request.device_id, context)
        known = self.service.kb.record_status(request)
        if known:
            self.agents.seen(request)
        else:
            error = UnknownDeviceError(f"status from unregistered device {request.device_id!r}")
            self.service.metrics.inc(error.code)
            log.warning("status refused (%s): %s", error.code, error)
        return hub_pb2.StatusAck(known_device=known)

    def wake_watchers(self) -> None:
        """A bundle record changed (or the hub stops): every WatchUpdates stream looks again now rather than at its
        next poll."""
        self.calls.wake_watches()


def watch_slots(config: GrpcConfig) -> int:
    """WatchUpdates streams the whole fleet may hold: each parks a thread for good, so they leave room for one
    device at all its other call slots (its watch is among the slots) plus FREE_WORKERS threads for everyone's short
    calls (the config guarantees at least 1)."""
    return max(1, config.max_workers - FREE_WORKERS - (config.max_calls_per_device - 1))


def server_credentials(tls: GrpcTlsConfig) -> grpc.ServerCredentials:
    """TLS credentials; with a client CA, devices must present a certificate it signed (mutual TLS)."""
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
                                       root_certificates=client_ca, require_client_auth=client_ca is not None)


@HUB_TRANSPORTS.register(TRANSPORT)
class GrpcTransport(HubTransport):
    """Owns the grpc.Server: start() binds (port 0 picks a free one, see `.port`), stop() drains. Devices fetch
    bundles through it and its WatchUpdates streams announce them."""

    name = TRANSPORT
    config: GrpcConfig

    def __init__(self, service: HubService, config: GrpcConfig) -> None:
        super().__init__(service, config)
        self._stopping = threading.Event()
        self.servicer = AnnotationHubServicer(service, config, self._stopping)
        self.health = health.HealthServicer()
        self.port = 0
        self._server: grpc.Server | None = None

    def _handlers(self) -> grpc.GenericRpcHandler:
        cap, s, calls = self.config.max_message_bytes, self.servicer, DeviceCalls
        stream = grpc.stream_stream_rpc_method_handler  # request streams of one: see `proved`
        out = lambda m: m.SerializeToString()  # noqa: E731
        status = _deserializer(hub_pb2.DeviceStatus, min(cap, self.config.max_status_bytes), StatusTooLargeError,
                               "grpc.max_status_bytes")  # checked before decoding, which runs on the polling thread
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Submit": stream(s.proved(calls.SUBMIT, s.Submit), _deserializer(hub_pb2.AnnotationRequest, cap), out),
            "FetchBundle": stream(s.proved(calls.FETCH, s.FetchBundle), _deserializer(hub_pb2.BundleRequest, cap),
                                  out),
            "WatchUpdates": stream(s.proved(calls.WATCH, s.WatchUpdates),
                                   _deserializer(hub_pb2.WatchUpdatesRequest, cap), out),
            "ReportStatus": grpc.stream_unary_rpc_method_handler(s.proved(calls.STATUS, s.ReportStatus), status, out),
        })

    def start(self) -> None:
        options = [("grpc.max_receive_message_length", 2 * self.config.max_message_bytes),
                   ("grpc.max_send_message_length", self.config.max_message_bytes),
                   ("grpc.so_reuseport", 0)]  # 1 let a second hub bind the same port and take half the calls
        tls = self.config.tls
        gate = CredentialGate(self.servicer.callers, f"/{SERVICE_NAME}/",
                              mutual_tls=tls is not None and tls.client_ca_file is not None)
        server = grpc.server(futures.ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="grpc"),
                             options=options, maximum_concurrent_rpcs=self.config.max_workers * 4,
                             interceptors=(gate,))
        server.add_generic_rpc_handlers((self._handlers(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.config.host}:{self.config.port}"
        try:
            self.port = (server.add_secure_port(address, server_credentials(tls)) if tls
                         else server.add_insecure_port(address))
        except RuntimeError as exc:  # grpcio: "Failed to bind to address ..."
            server.stop(None)
            raise HubConfigError(f"grpc: cannot listen on {address} (in use by another process, another hub?): "
                                 f"{exc}") from None
        self.servicer.fetch_uri = self.config.advertise_url or self._bound_uri()
        server.start()
        self._server = server
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC AnnotationHub on %s:%d (%s)", self.config.host, self.port, "TLS" if tls else "plaintext")

    def _bound_uri(self) -> str:
        """grpc[s]://host:port of the bound address; '' for a wildcard host (0.0.0.0, ::), which no device can
        dial: notices then carry no address and each device fetches from the hub URL it already uses."""
        if self.config.host.strip("[]") in WILDCARD_HOSTS:
            log.warning("grpc.host %s is a wildcard: update notices name no fetch address (devices fetch from their "
                        "own hub URL); set grpc.advertise_url to name one", self.config.host)
            return ""
        return f"{'grpcs' if self.config.tls else 'grpc'}://{self.config.host}:{self.port}"

    def stop(self, grace_s: float = 2.0) -> None:
        self._stopping.set()
        self.servicer.wake_watchers()
        self.health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace_s).wait()
        self.servicer.reads.stop()

    @property
    def fetch_uri(self) -> str:
        return self.servicer.fetch_uri

    def describe(self) -> str:
        return f"gRPC port {self.port}" + (" (TLS)" if self.config.tls else "")

    def announce(self, notice: hub_pb2.ModelUpdate, device_ids: Sequence[str]) -> None:
        """Wake the WatchUpdates streams: each re-reads its bundle's record and tells its device."""
        self.servicer.wake_watchers()
