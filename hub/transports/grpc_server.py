"""gRPC transport: the AnnotationHub service plus grpc.health.v1, with explicit message-size limits.

Handlers are built with our own request deserializers so a malformed or oversized message becomes a typed,
counted error (INVALID_ARGUMENT / RESOURCE_EXHAUSTED) instead of an anonymous failure inside gRPC. gRPC's own
receive limit is set to twice the configured cap: between the two our check answers; beyond, gRPC refuses.
Every call must prove a device and may speak only for it (see grpc_auth); the health service stays open.
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

from hgen.hub.transport_config import GrpcConfig, GrpcTlsConfig
from hgen.hub.devices import DeviceCredentials
from hgen.hub.bundle_files import open_archive
from hgen.hub.errors import (BadInputError, BundleMissingError, HubConfigError, MalformedMessageError,
                             MessageTooLargeError, UnknownDeviceError)
from hgen.hub.kb.store import bundle_notice
from hgen.hub.service import HubService
from hgen.hub.transports import HUB_TRANSPORTS
from hgen.hub.transports.base import HubTransport
from hgen.hub.transports.grpc_auth import CallerCheck
from hgen.protos import hub_pb2

log = logging.getLogger(__name__)
SERVICE_NAME = "hgen.v1.AnnotationHub"
TRANSPORT = "grpc"
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class _Refused:
    """Stands in for a request that failed to decode; the handler turns it into a status code."""

    error: BadInputError


def _deserializer(message: type, max_bytes: int) -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        if len(data) > max_bytes:
            return _Refused(MessageTooLargeError(f"{message.__name__} of {len(data)} bytes exceeds {max_bytes}"))
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
        self._updates = threading.Condition()
        self.fetch_uri = config.advertise_url or ""  # set to the bound address at start when not configured
        self.callers = CallerCheck(service, DeviceCredentials(service.kb))

    def _refuse(self, request: object, context: grpc.ServicerContext) -> None:
        if isinstance(request, _Refused):
            error = request.error
            self.service.metrics.inc(error.code)
            log.warning("gRPC request refused (%s): %s", error.code, error)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(error, MessageTooLargeError) \
                else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(error))

    def Submit(self, request: hub_pb2.AnnotationRequest, context: grpc.ServicerContext) -> Iterator[hub_pb2.SampleReply]:
        device = self.callers.caller(context)
        self._refuse(request, context)
        self.callers.check_claim(device, request.device_id, context)
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

    def FetchBundle(self, request: hub_pb2.BundleRequest, context: grpc.ServicerContext) -> Iterator[hub_pb2.BundleChunk]:
        device = self.callers.caller(context)
        self._refuse(request, context)
        record = self.service.kb.bundle(request.bundle_name, request.version)
        if record is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no bundle {request.bundle_name!r} {request.version!r}")
        self.callers.check_target(device, record, context)
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

    def WatchUpdates(self, request: hub_pb2.WatchUpdatesRequest,
                     context: grpc.ServicerContext) -> Iterator[hub_pb2.ModelUpdate]:
        device = self.callers.caller(context)
        self._refuse(request, context)
        self.callers.check_claim(device, request.device_id, context)
        known = request.known_version
        while context.is_active() and not self._stopping.is_set():
            record = self.callers.bundle_for(device, request.bundle_name)
            if record is not None and record.version != known:
                self.callers.check_target(device, record, context)
                known = record.version
                # this hub serves every recorded bundle (`bundle_files`), so it points the device at itself, not
                # at the hub that published it, which may be down or on a disk this one does not share
                yield bundle_notice(replace(record, fetch_uri=self.fetch_uri))  # '': the device's own hub link
            with self._updates:
                self._updates.wait(timeout=self.config.reply_poll_s * 4)

    def ReportStatus(self, request: hub_pb2.DeviceStatus, context: grpc.ServicerContext) -> hub_pb2.StatusAck:
        device = self.callers.caller(context)
        self._refuse(request, context)
        self.callers.check_claim(device, request.device_id, context)
        known = self.service.kb.record_status(request)
        if not known:
            error = UnknownDeviceError(f"status from unregistered device {request.device_id!r}")
            self.service.metrics.inc(error.code)
            log.warning("status refused (%s): %s", error.code, error)
        return hub_pb2.StatusAck(known_device=known)

    def wake_watchers(self) -> None:
        """A bundle record changed: every WatchUpdates stream looks again now rather than at its next poll."""
        with self._updates:
            self._updates.notify_all()


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
        cap, s = self.config.max_message_bytes, self.servicer
        stream = grpc.unary_stream_rpc_method_handler
        out = lambda m: m.SerializeToString()  # noqa: E731
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Submit": stream(s.Submit, _deserializer(hub_pb2.AnnotationRequest, cap), out),
            "FetchBundle": stream(s.FetchBundle, _deserializer(hub_pb2.BundleRequest, cap), out),
            "WatchUpdates": stream(s.WatchUpdates, _deserializer(hub_pb2.WatchUpdatesRequest, cap), out),
            "ReportStatus": grpc.unary_unary_rpc_method_handler(
                s.ReportStatus, _deserializer(hub_pb2.DeviceStatus, cap), out),
        })

    def start(self) -> None:
        options = [("grpc.max_receive_message_length", 2 * self.config.max_message_bytes),
                   ("grpc.max_send_message_length", self.config.max_message_bytes),
                   ("grpc.so_reuseport", 0)]  # 1 let a second hub bind the same port and take half the calls
        server = grpc.server(futures.ThreadPoolExecutor(self.config.max_workers, thread_name_prefix="grpc"),
                             options=options, maximum_concurrent_rpcs=self.config.max_workers * 4)
        server.add_generic_rpc_handlers((self._handlers(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.config.host}:{self.config.port}"
        tls = self.config.tls
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
        self.health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace_s).wait()

    @property
    def fetch_uri(self) -> str:
        return self.servicer.fetch_uri

    def describe(self) -> str:
        return f"gRPC port {self.port}" + (" (TLS)" if self.config.tls else "")

    def announce(self, notice: hub_pb2.ModelUpdate, device_ids: Sequence[str]) -> None:
        """Wake the WatchUpdates streams: each re-reads its bundle's record and tells its device."""
        self.servicer.wake_watchers()
