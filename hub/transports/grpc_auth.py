"""Who is calling: the device a gRPC call's credential proves, held against the device id its message names.

A call proves a device by `authorization: Bearer <device id>:<secret>` metadata (issued by `hgen-hub add-device`),
or, without one, by the common name of its mutual-TLS client certificate when that names an enrolled device.
No proof, a revoked or rotated secret, or a message naming another device: PERMISSION_DENIED, counted always and
logged once per (reason, device named, peer host): a client retrying or guessing in a loop must not flood the log.
The stored hash is re-read on every call, so a revocation holds from the next call on, in every hub process.
"""

from __future__ import annotations

import logging
import threading

import grpc

from hgen.hub.bundle_files import record_target
from hgen.hub.devices import DeviceAuthError, DeviceCredentials, DeviceMismatchError
from hgen.hub.errors import BadInputError
from hgen.hub.kb.store import BundleRecord
from hgen.hub.service import HubService

log = logging.getLogger(__name__)
MAX_LOGGED_SOURCES = 1024  # distinct (reason, device, peer host) refusals logged; the rest are only counted


class WrongTargetError(BadInputError):
    """A device asked for a bundle built for another target than its own."""

    code = "device_wrong_target"


def bearer_token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


def peer_host(context: grpc.ServicerContext) -> str:
    """`ipv4:10.0.0.7` of `ipv4:10.0.0.7:53122`: a client's next connection has another port, not another source.
    'unknown' for a context without a peer (the web routes refuse through CallerCheck with a stand-in)."""
    peer_of = getattr(context, "peer", None)
    peer = (peer_of() if callable(peer_of) else None) or "unknown"
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class OnceLog:
    """Logs a refusal the first time its key is seen, up to `limit` keys (then says that it stops): memory and log
    stay bounded whatever a client sends; the metrics still count every refusal."""

    def __init__(self, limit: int = MAX_LOGGED_SOURCES) -> None:
        self.limit = limit
        self._seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def first(self, key: tuple[str, ...]) -> bool:
        with self._lock:
            if key in self._seen or len(self._seen) > self.limit:
                return False
            self._seen.add(key)
            if len(self._seen) > self.limit:
                log.warning("%d distinct refusals logged: further ones are only counted (metrics)", self.limit)
                return False
            return True


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

    def _deny(self, context: grpc.ServicerContext, error: BadInputError, device: str | None) -> None:
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
                self._deny(context, DeviceAuthError("the device credential is unknown, revoked or rotated"),
                           token.partition(":")[0][:128])
            return device  # type: ignore[return-value]  # _deny raised otherwise
        name = certificate_name(context)
        if name is None or not self.devices.is_active(name):
            self._deny(context, DeviceAuthError("no device credential (bearer token or client certificate of an "
                                                "enrolled device)"), name)
        return name  # type: ignore[return-value]

    def check_claim(self, device: str, claimed: str, context: grpc.ServicerContext) -> None:
        """The message must name the device the call's credential proved."""
        try:
            self.service.check_sender(device, claimed)  # counts and logs once
        except DeviceMismatchError as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

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
            self._deny(context, WrongTargetError(f"{device} runs {wanted}; bundle {record.name} {record.version} "
                                                 f"is for {found or 'an unknown target'}"), device)
