"""gRPC uplink: `Submit` streams per batch, `WatchUpdates` for notices, `FetchBundle` (resumable), `ReportStatus`.

Every call carries the device's credential (`authorization: Bearer <device id>:<secret>`, added by a channel
interceptor) and has a deadline. Submit runs without wait_for_ready so a hub that is down fails fast: the samples
stay in the outbox and are resent when the channel is READY again.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from hgen.edge_agent.config import HubConfig, TlsConfig
from hgen.edge_agent.errors import AgentConfigError, DownloadError, SwapError
from hgen.edge_agent.transports.base import (
    CREDENTIAL_HINT,
    TRANSPORTS,
    ConnectionState,
    Endpoint,
    Transport,
    TransportCallbacks,
    TransportErrorCode,
    parse_endpoint,
    stamped,
)
from hgen.protos import hub_pb2, hub_pb2_grpc

log = logging.getLogger(__name__)
MAX_MESSAGE = 8 << 20
STATUS_TIMEOUT_S = 5.0
FETCH_TIMEOUT_S = 300.0
FETCH_ATTEMPTS = 5
WATCH_POLL_S = 5.0  # between WatchUpdates calls while the hub has no stream slot for this device
_CONNECTIVITY = {
    grpc.ChannelConnectivity.IDLE: ConnectionState.DISCONNECTED,
    grpc.ChannelConnectivity.CONNECTING: ConnectionState.CONNECTING,
    grpc.ChannelConnectivity.READY: ConnectionState.CONNECTED,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: ConnectionState.DISCONNECTED,
    grpc.ChannelConnectivity.SHUTDOWN: ConnectionState.CLOSED,
}
_CODES = {
    grpc.StatusCode.UNAVAILABLE: TransportErrorCode.UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: TransportErrorCode.TIMEOUT,
    grpc.StatusCode.NOT_FOUND: TransportErrorCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED: TransportErrorCode.TLS,
}
# What an operator reading the agent's log should check, per status of a failed call.
_HINTS = {
    grpc.StatusCode.PERMISSION_DENIED: f"the hub refused this device: {CREDENTIAL_HINT}",
    grpc.StatusCode.UNAVAILABLE: "is the hub running, and reachable at that address from here?",
}
# gRPC reports a failed handshake (wrong CA, bad certificate) as UNAVAILABLE; only its details tell them apart.
_TLS_HINTS = ("handshake", "ssl", "certificate", "tsi_")


def describe(exc: grpc.RpcError) -> str:
    """A failed call's status, the hub's words and what to check."""
    code = exc.code()  # type: ignore[attr-defined]
    details = str(exc.details() or "")  # type: ignore[attr-defined]
    return f"{code.name}" + (f": {details}" if details else "") + (f" ({_HINTS[code]})" if code in _HINTS else "")


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                            "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the device's bearer token to every call (plaintext channels too, where call credentials are not sent)."""

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details.method, details.timeout, tuple(details.metadata or ()) + self._metadata,
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_token(details), request)


def bearer_token(device_id: str, config: HubConfig) -> str | None:
    return f"{device_id}:{config.secret.get_secret_value()}" if config.secret is not None else None


def make_channel(endpoint: Endpoint, tls: TlsConfig | None, token: str | None = None) -> grpc.Channel:
    target = f"{endpoint.host}:{endpoint.port}"
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
               ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 5000)]
    if not endpoint.tls:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if tls is None:  # the config refuses this (HubConfig); a caller building its own endpoint gets told too
            raise AgentConfigError(f"{endpoint.scheme}s://{target} uses TLS: set hub.tls (ca_file, optionally "
                                   "cert_file/key_file)")
        tls.check_files()
        read = lambda p: p.read_bytes() if p else None  # noqa: E731
        credentials = grpc.ssl_channel_credentials(read(tls.ca_file), read(tls.key_file), read(tls.cert_file))
        channel = grpc.secure_channel(target, credentials, options=options)
    return grpc.intercept_channel(channel, BearerInterceptor(token)) if token else channel


def error_code(exc: grpc.RpcError) -> TransportErrorCode:
    code = exc.code()  # type: ignore[attr-defined]
    details = str(exc.details() or "").lower()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and any(hint in details for hint in _TLS_HINTS):
        return TransportErrorCode.TLS
    return _CODES.get(code, TransportErrorCode.REFUSED)


REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def busy(exc: grpc.RpcError) -> bool:
    """The hub refused this call under one of its per-device caps (its detail names `grpc.max_..._per_device`):
    call again later. gRPC gives the same code to a message over a size limit, which is a fault to name."""
    code, details = exc.code(), str(exc.details() or "")  # type: ignore[attr-defined]
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "_per_device" in details


def fetch_bundle_grpc(stub: hub_pb2_grpc.AnnotationHubStub, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
    """Download in chunks, resuming at the received offset after a broken stream; check size and SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset, last_error = 0, ""
    with open(dest, "wb") as out:
        for _ in range(FETCH_ATTEMPTS):
            request = hub_pb2.BundleRequest(bundle_name=notice.bundle_name, version=notice.version, offset=offset)
            try:
                for chunk in stub.FetchBundle(request, timeout=FETCH_TIMEOUT_S):
                    if chunk.offset != offset:
                        raise DownloadError(f"bundle chunk at offset {chunk.offset}, expected {offset}")
                    out.write(chunk.data)
                    offset += len(chunk.data)
                break
            except grpc.RpcError as exc:
                last_error = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    raise SwapError(f"hub has no bundle {notice.bundle_name} {notice.version}") from None
                if exc.code() in REFUSED:  # type: ignore[attr-defined]  # asking again is refused again
                    raise SwapError(f"the hub refused the download: {last_error}") from None
        else:
            raise DownloadError(f"bundle download failed after {FETCH_ATTEMPTS} attempts: {last_error}")
    check_download(dest, notice)
    return dest


def check_download(path: Path, notice: hub_pb2.ModelUpdate) -> None:
    """The notice's size and SHA-256 must match the file (the signature is checked when it is loaded)."""
    data = path.read_bytes()
    if notice.size and len(data) != notice.size:
        raise DownloadError(f"downloaded {len(data)} bytes, the notice says {notice.size}")
    digest = hashlib.sha256(data).hexdigest()
    if notice.sha256 and digest != notice.sha256:
        raise DownloadError(f"downloaded bundle SHA-256 {digest[:12]} differs from the notice's "
                            f"{notice.sha256[:12]}")


def fetch_from_url(url: str, notice: hub_pb2.ModelUpdate, dest: Path, tls: TlsConfig | None,
                   token: str | None = None) -> Path:
    """Fetch from a grpc[s]://host:port bundle source other than the hub link itself (a notice's fetch_uri may
    name one the config never saw: without hub.tls a grpcs:// one refuses this update, not the agent; with
    hub.tls a plaintext grpc:// one is refused too, as it would carry the device's secret in the clear)."""
    if token and tls is not None and url.startswith("grpc://"):
        raise SwapError(f"update {notice.version}: fetch_uri {url!r} refused: it is plaintext, and this device "
                        "talks to its hub over TLS (hub.tls): its secret would travel in the clear")
    try:
        channel = make_channel(parse_endpoint(url), tls, token)
    except AgentConfigError as exc:
        raise SwapError(f"update {notice.version}: fetch_uri {url!r} refused: {exc}") from None
    try:
        return fetch_bundle_grpc(hub_pb2_grpc.AnnotationHubStub(channel), notice, dest)
    finally:
        channel.close()


@TRANSPORTS.register("grpc")
class GrpcTransport(Transport):
    """Up to `MAX_STREAMS` Submit streams at once (each holds a hub worker thread), and at most `MAX_QUEUED`
    requests waiting for one: beyond that `send` refuses and the samples wait in the outbox, so a backlog after
    an outage goes out as a bounded stream instead of piling up in memory."""

    MAX_STREAMS = 4
    MAX_QUEUED = 8

    def __init__(self, endpoint: Endpoint, config: HubConfig, device_id: str, callbacks: TransportCallbacks) -> None:
        super().__init__(endpoint, config, device_id, callbacks)
        self._token = bearer_token(device_id, config)
        self._channel = make_channel(endpoint, config.tls, self._token)
        self._stub = hub_pb2_grpc.AnnotationHubStub(self._channel)
        self._pool = ThreadPoolExecutor(self.MAX_STREAMS, thread_name_prefix="agent-grpc")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._queued = 0  # requests handed to the pool whose stream has not started yet
        self._stopping = threading.Event()
        self._watch_call: grpc.Future | None = None
        self._watched: tuple[str, str] | None = None
        self._watcher: threading.Thread | None = None
        self._tls_failure = ""  # last handshake error seen by a call: the channel's own state cannot say why

    def start(self) -> None:
        self._channel.subscribe(self._on_connectivity, try_to_connect=True)

    def _on_connectivity(self, connectivity: grpc.ChannelConnectivity) -> None:
        state = _CONNECTIVITY[connectivity]
        error, detail = TransportErrorCode.OK, connectivity.name
        if connectivity is grpc.ChannelConnectivity.READY:
            self._tls_failure = ""
        elif connectivity is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            error = TransportErrorCode.TLS if self._tls_failure else TransportErrorCode.UNREACHABLE
            detail = self._tls_failure or detail
        self._set_state(state, error, detail)

    def _rpc_failed(self, exc: grpc.RpcError) -> None:
        """Name the cause on the link's state (a TLS failure stays named until a connection succeeds)."""
        error, detail = error_code(exc), str(exc.details())  # type: ignore[attr-defined]
        if error is TransportErrorCode.TLS:
            self._tls_failure = detail
        self._set_state(ConnectionState.DISCONNECTED, error, detail)

    def send(self, request: hub_pb2.AnnotationRequest) -> bool:
        if self._stopping.is_set():
            return False
        ids = {s.sample_id for s in request.samples}
        with self._lock:
            if ids & self._in_flight:
                ids -= self._in_flight
                if not ids:
                    return True
                request = _only(request, ids)
            if self._queued >= self.MAX_QUEUED:
                return False
            self._in_flight |= ids
            self._queued += 1
        self._pool.submit(self._submit, request, ids)
        return True

    def _submit(self, request: hub_pb2.AnnotationRequest, ids: set[str]) -> None:
        with self._lock:
            self._queued -= 1
        try:
            for reply in self._stub.Submit(request, timeout=self.config.call_timeout_s):
                self._take(reply)
        except grpc.RpcError as exc:
            if self._stopping.is_set():
                pass
            elif busy(exc):  # the hub is up and says 'not now' to this device: not a link failure
                log.warning("Submit of %d samples refused for now (%s); they are asked again later", len(ids),
                            exc.details())  # type: ignore[attr-defined]
            else:
                log.warning("Submit of %d samples to %s failed: %s", len(ids), self.config.url, describe(exc))
                self._rpc_failed(exc)
        except Exception:  # a bug here must not kill the worker silently
            if not self._stopping.is_set():  # stopping closes the channel under calls still starting: expected
                log.exception("Submit stream failed")
        finally:
            with self._lock:
                self._in_flight -= ids

    def _take(self, reply: hub_pb2.SampleReply) -> None:
        """One reply to the agent; one it fails to take (its outbox failing) is logged and the stream goes on: the
        sample stays stored and is asked about again."""
        try:
            self.callbacks.on_reply(reply)
        except Exception:
            log.exception("reply for sample %s not taken; it is asked again later", reply.sample_id)

    def in_flight(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._in_flight)

    def accepting(self) -> bool:
        """Room among the requests waiting for a stream (what `send` checks). Not the channel's state: a call is
        what wakes an idle channel, and with the hub away calls fail fast and free their place."""
        if self._stopping.is_set():
            return False
        with self._lock:
            return self._queued < self.MAX_QUEUED

    def watch(self, bundle_name: str, known_version: str) -> None:
        """(Re)start following update notices for `bundle_name` newer than `known_version`."""
        with self._lock:
            self._watched = (bundle_name, known_version)
            call = self._watch_call
        if call is not None:
            call.cancel()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch_loop, name="agent-watch", daemon=True)
            self._watcher.start()

    def _watch_loop(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            with self._lock:
                name, known = self._watched or ("", "")
                call = self._stub.WatchUpdates(hub_pb2.WatchUpdatesRequest(
                    device_id=self.device_id, bundle_name=name, known_version=known), wait_for_ready=True)
                self._watch_call = call
            capped = False
            try:
                for notice in call:
                    delay = 0.2
                    self.callbacks.on_update(notice)
            except grpc.RpcError as exc:
                capped = exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            # a hub whose watch streams are all taken sends the newest notice and ends the call: poll, not at 5/s
            if self._stopping.wait(WATCH_POLL_S if capped else delay):
                return
            delay = min(delay * 2, 5.0)

    def report_status(self, status: hub_pb2.DeviceStatus) -> None:
        try:
            self._stub.ReportStatus(stamped(status), timeout=STATUS_TIMEOUT_S)
        except grpc.RpcError as exc:
            log.debug("status not delivered: %s", exc.code())  # type: ignore[attr-defined]
            if error_code(exc) is TransportErrorCode.TLS and not self._stopping.is_set():
                self._rpc_failed(exc)  # often the first call to fail: status goes out at start-up

    def fetch_bundle(self, notice: hub_pb2.ModelUpdate, dest: Path) -> Path:
        uri = notice.fetch_uri
        if uri.startswith(("grpc://", "grpcs://")) and uri != self.config.url:
            return fetch_from_url(uri, notice, dest, self.config.tls, self._token)
        return fetch_bundle_grpc(self._stub, notice, dest)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            call = self._watch_call
        if call is not None:
            call.cancel()
        self._set_state(ConnectionState.CLOSED)
        self._channel.close()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _only(request: hub_pb2.AnnotationRequest, ids: set[str]) -> hub_pb2.AnnotationRequest:
    trimmed = hub_pb2.AnnotationRequest()
    trimmed.CopyFrom(request)
    del trimmed.samples[:]
    trimmed.samples.extend(s for s in request.samples if s.sample_id in ids)
    return trimmed
