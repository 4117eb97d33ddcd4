"""Who is calling: the device a gRPC call's credential proves, held against the device id its message names.

A call proves a device by `authorization: Bearer <device id>:<secret>` metadata (issued by `hgen-hub add-device`),
or, without one, by the common name of its mutual-TLS client certificate when that names an enrolled device.
No proof, a revoked or rotated secret, or a message naming another device: PERMISSION_DENIED, counted always and
logged once per (reason, device named, peer host): a client retrying or guessing in a loop must not flood the log.
The stored hash is re-read on every call, so a revocation holds from the next call on, in every hub process.

The proof is checked twice, both times before the request message is read (a unary handler of the sync server
parks a pool thread waiting for that message, so a check after it let half-open calls hold every thread): first by
`CredentialGate`, a server interceptor that sees the call's metadata and refuses a missing or malformed credential
with no I/O, then on a pool thread by `CallerCheck.caller` against the knowledge base (the servicer's handlers take
their request as a stream of one, `AnnotationHubServicer.proved`); the message is read only then, and the device it
names must be the one proved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from hgen.hub.bundle_files import record_target
from hgen.hub.devices import DEVICE_ID, DeviceAuthError, DeviceCredentials, DeviceMismatchError
from hgen.hub.errors import BadInputError
from hgen.hub.kb.store import BundleRecord
from hgen.hub.service import MAX_LOGGED_SOURCES, HubService, OnceLog
from hgen.hub.validation import clip

__all__ = ["MAX_LOGGED_SOURCES", "CallerCheck", "CredentialGate", "OnceLog", "WrongTargetError"]

log = logging.getLogger(__name__)
NO_CREDENTIAL = "no device credential (bearer token or client certificate of an enrolled device)"
UNKNOWN_CREDENTIAL = "the device credential is unknown, revoked or rotated"


class WrongTargetError(BadInputError):
    """A device asked for a bundle built for another target than its own."""

    code = "device_wrong_target"


def token_of(metadata: object) -> str | None:
    """The bearer token of a call's metadata (the `<device id>:<secret>` after `authorization: Bearer `)."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


def bearer_token(context: grpc.ServicerContext) -> str | None:
    return token_of(context.invocation_metadata())


def peer_host(context: grpc.ServicerContext) -> str:
    """`ipv4:10.0.0.7` of `ipv4:10.0.0.7:53122`: a client's next connection has another port, not another source.
    'unknown' for a context without a peer (the web routes refuse through CallerCheck with a stand-in)."""
    peer_of = getattr(context, "peer", None)
    peer = (peer_of() if callable(peer_of) else None) or "unknown"
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


def certificate_name(context: grpc.ServicerContext) -> str | None:
    """The common name of a verified client certificate (mutual TLS only; gRPC verified it against the CA)."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode() if names else None


class CallerCheck:
    """The checks every AnnotationHub handler runs before it touches its request."""

    def __init__(self, service: HubService, devices: DeviceCredentials) -> None:
        self.service = service
        self.devices = devices
        self._logged = OnceLog()

    def deny(self, context: grpc.ServicerContext, error: BadInputError, device: str | None) -> None:
        """Count, log once per (reason, device, peer host), and end the call with PERMISSION_DENIED."""
        self.service.metrics.inc(error.code)
        host = peer_host(context)
        if self._logged.first((error.code, device or "", host)):
            log.warning("call refused (%s) from %s, device %r: %s (logged once per device and peer; every "
                        "refusal is counted in metrics)", error.code, host, device, error)
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))

    def caller(self, context: grpc.ServicerContext) -> str:
        token = bearer_token(context)
        if token is not None:
            device = self.devices.authenticate(token)
            if device is None:
                self.deny(context, DeviceAuthError(UNKNOWN_CREDENTIAL), clip(token.partition(":")[0]))
            return device  # type: ignore[return-value]  # deny raised otherwise
        name = certificate_name(context)
        if name is None or not self.devices.is_active(name):
            self.deny(context, DeviceAuthError(NO_CREDENTIAL), name)
        return name  # type: ignore[return-value]

    def check_claim(self, device: str, claimed: str, context: grpc.ServicerContext) -> None:
        """The message must name the device the call's credential proved."""
        try:
            self.service.check_sender(device, claimed)  # counts and logs once
        except DeviceMismatchError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))  # the service clipped the claim in it

    def target_of(self, device: str) -> str | None:
        """The target a device runs: enrolled with (`add-device --target`), else named in retrain.models."""
        state = self.devices.state(device)
        if state is not None and state.target is not None:
            return state.target
        return next((model.devices[device] for model in self.service.config.retrain.models
                     if device in model.devices), None)

    def bundle_for(self, device: str, name: str) -> BundleRecord | None:
        """The newest bundle a device watching `name` (its model's name) should run: `name`, or `name-<target>`
        when the hub builds its target under that name (a model deployed to several targets), whichever is newer
        among those built for the device's target (none: no notice, rather than one it must refuse); without a
        known target, `name` alone."""
        kb = self.service.kb
        target = self.target_of(device)
        if target is None:
            return kb.bundle(name)
        found = [r for r in (kb.bundle(name), kb.bundle(f"{name}-{target}"))
                 if r is not None and record_target(r) == target]
        return max(found, key=lambda r: r.published_at, default=None)

    def check_target(self, device: str, record: BundleRecord, context: grpc.ServicerContext) -> None:
        """A device with a target (enrolled with one, or named in retrain.models) gets only bundles built for it."""
        wanted = self.target_of(device)
        if wanted is None:
            return
        found = record_target(record)
        if found != wanted:
            self.deny(context, WrongTargetError(f"{device} runs {wanted}; bundle {record.name} {record.version} "
                                                 f"is for {found or 'an unknown target'}"), device)


class CredentialGate(grpc.ServerInterceptor):
    """Refuses AnnotationHub calls without a credential before the server waits for their request message.

    Runs on the server's polling thread, so it does no I/O: a call without a token (unless over mutual TLS, whose
    certificate name only the handler sees) or with a malformed one is refused here; a well-formed token goes on to
    the handler, which checks it against the knowledge base before it reads the request. A refused call gets a
    handler that reads no request and aborts with PERMISSION_DENIED at once, counted and logged once per device and
    peer like every refusal (`CallerCheck`).
    """

    def __init__(self, callers: CallerCheck, service_prefix: str, *, mutual_tls: bool) -> None:
        self.callers = callers
        self.prefix = service_prefix
        self.mutual_tls = mutual_tls

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if not details.method.startswith(self.prefix):  # grpc.health.v1 stays open
            return continuation(details)
        refusal = self.refusal(token_of(details.invocation_metadata))
        if refusal is None:
            return continuation(details)
        return grpc.stream_unary_rpc_method_handler(  # request-streaming: runs without waiting for a message
            lambda _requests, context: self.callers.deny(context, DeviceAuthError(refusal[0]), refusal[1]))

    def refusal(self, token: str | None) -> tuple[str, str | None] | None:
        """(reason, device named) when the call surely proves no device; None to let the handler decide. No database
        read here: this runs on gRPC's one polling thread, which a read waiting on a SQLite writer's lock stalled
        for every call (health checks too). A well-formed token is checked by the handler, on a pool thread."""
        if token is None:
            return None if self.mutual_tls else (NO_CREDENTIAL, None)
        device_id, _, secret = token.partition(":")
        if not secret or not DEVICE_ID.match(device_id):
            return UNKNOWN_CREDENTIAL, clip(device_id)
        return None
