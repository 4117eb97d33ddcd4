"""Device credentials: the hub issues each device a random secret, shown once and stored only as a slow hash.

One hash serves both checkers: Mosquitto's own PBKDF2-SHA512 format (`$7$`), which the broker verifies on
CONNECT from the password file rendered from these rows (hgen.hub.broker_acl), and which the hub verifies for
gRPC bearer tokens (`<device id>:<secret>`). A verified token is cached by its SHA-256 together with the stored
hash it matched, and the stored hash is re-read on every call: a revoked or rotated credential is refused on
the very next call, by every hub process sharing the database, without paying the slow hash each time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import select

from hgen.hub.errors import BadInputError, HubError
from hgen.hub.kb.models import DeviceCredential
from hgen.hub.kb.store import KnowledgeBase

log = logging.getLogger(__name__)
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # also safe as an MQTT user name and topic level
ITERATIONS = 100_000  # PBKDF2-SHA512 rounds: ~60 ms per CONNECT at the broker, once per token in the hub
SALT_BYTES, SECRET_BYTES = 12, 32  # Mosquitto's salt length; 256-bit random secrets


class DeviceCredentialError(HubError, ValueError):
    """An add/revoke/rotate the hub refuses (bad or reserved name, no such device, already enrolled...)."""


class DeviceAuthError(BadInputError):
    """A call without a valid device credential (none, unknown, revoked or rotated away)."""

    code = "device_auth_refused"


class DeviceMismatchError(BadInputError):
    """A message naming another device than the account it arrived on (impersonation)."""

    code = "device_impersonation"


def hash_secret(secret: str, iterations: int = ITERATIONS) -> str:
    """Mosquitto's `$7$<iterations>$<salt b64>$<PBKDF2-HMAC-SHA512 b64>` (what mosquitto_passwd writes)."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_secret(secret: str, stored: str | None) -> bool:
    """Constant-time check; a missing or malformed hash is a mismatch."""
    try:
        _, kind, iterations, salt, key = (stored or "").split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(key)
        got = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def check_device_id(device_id: str, reserved: Collection[str] = ()) -> str:
    if not DEVICE_ID.match(device_id):
        raise DeviceCredentialError(f"device ids are 1-128 letters, digits and . _ - (starting with a letter or "
                                    f"digit), got {device_id!r}")
    if device_id in reserved:
        raise DeviceCredentialError(f"{device_id!r} is reserved for the hub's own broker account")
    return device_id


@dataclass(frozen=True)
class IssuedCredential:
    """What `add`/`rotate` return: the only time the secret exists outside the device."""

    device_id: str
    secret: str
    target: str | None
    unsynced: str = ""  # why the broker did not take it yet (the secret is issued and must not be lost)

    @property
    def bearer(self) -> str:
        """The gRPC bearer token (`authorization: Bearer <this>`); the MQTT user is the device id."""
        return f"{self.device_id}:{self.secret}"


@dataclass(frozen=True)
class CredentialState:
    device_id: str
    active: bool
    target: str | None
    issued_at: float
    revoked_at: float | None


class DeviceCredentials:
    """add / revoke / rotate / authenticate against the knowledge base; `on_change` runs after each change
    (it re-renders the broker's password file and ACL and makes the broker reload them)."""

    def __init__(self, kb: KnowledgeBase, *, reserved: Collection[str] = (),
                 on_change: Callable[[], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.kb = kb
        self.reserved = frozenset(reserved)
        self.on_change = on_change
        self.clock = clock
        self._verified: dict[str, str] = {}  # SHA-256 of a token -> the stored hash it matched
        self._lock = threading.Lock()

    # --- issuing ----------------------------------------------------------------------------------------

    def add(self, device_id: str, target: str | None = None) -> IssuedCredential:
        """Register the device (if new) and issue its first secret; a revoked device may be enrolled again."""
        check_device_id(device_id, self.reserved)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = self.clock()
        self.kb.register_devices([device_id])
        with self.kb.session() as s:
            row = s.get(DeviceCredential, device_id)
            if row is not None and row.secret_hash is not None:
                raise DeviceCredentialError(f"device {device_id!r} already has a credential: rotate-device "
                                            f"replaces it, revoke-device withdraws it")
            row = row or DeviceCredential(device_id=device_id)
            row.secret_hash, row.target, row.issued_at, row.revoked_at = hash_secret(secret), target, now, None
            s.add(row)
        log.info("device %s enrolled (target %s)", device_id, target or "any")
        return IssuedCredential(device_id, secret, target, self._changed_keeping_secret())

    def rotate(self, device_id: str) -> IssuedCredential:
        """A new secret for an enrolled device; the old one stops working at once."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        with self.kb.session() as s:
            row = self._enrolled(s, device_id)
            row.secret_hash, row.issued_at = hash_secret(secret), self.clock()
            target = row.target
        log.info("device %s: secret rotated", device_id)
        return IssuedCredential(device_id, secret, target, self._changed_keeping_secret())

    def revoke(self, device_id: str) -> None:
        """The device's secret stops working at once (gRPC: next call; MQTT: the broker reload disconnects it)."""
        with self.kb.session() as s:
            row = self._enrolled(s, device_id)
            row.secret_hash, row.revoked_at = None, self.clock()
        log.info("device %s revoked", device_id)
        self._changed()

    def _enrolled(self, s, device_id: str) -> DeviceCredential:  # type: ignore[no-untyped-def]
        row = s.get(DeviceCredential, device_id)
        if row is None or row.secret_hash is None:
            raise DeviceCredentialError(f"device {device_id!r} has no active credential (add-device enrolls it)")
        return row

    def sync(self) -> None:
        """Re-apply the credentials where they are enforced outside the hub (the broker), e.g. at start-up."""
        if self.on_change is not None:
            self.on_change()

    def _changed_keeping_secret(self) -> str:
        """`_changed` after a secret was stored: a broker that fails to reload must not cost the caller the secret
        (it exists nowhere else; a retry would find the device enrolled). Returns why it failed, '' if it did not."""
        try:
            self._changed()
        except (HubError, OSError) as exc:  # a reload refused, or its files not writable
            log.error("the credential is stored, but the broker did not take it: %s", exc)
            return str(exc)
        return ""

    def _changed(self) -> None:
        with self._lock:
            self._verified.clear()
        if self.on_change is not None:
            self.on_change()

    # --- checking ---------------------------------------------------------------------------------------

    def active_hashes(self) -> dict[str, str]:
        """device id -> stored hash, for every device whose credential is not revoked."""
        with self.kb.session() as s:
            rows = s.execute(select(DeviceCredential.device_id, DeviceCredential.secret_hash)
                             .where(DeviceCredential.secret_hash.is_not(None)))
            return {device: digest for device, digest in rows}

    def state(self, device_id: str) -> CredentialState | None:
        with self.kb.session() as s:
            row = s.get(DeviceCredential, device_id)
            if row is None:
                return None
            return CredentialState(row.device_id, row.secret_hash is not None, row.target, row.issued_at,
                                   row.revoked_at)

    def is_active(self, device_id: str) -> bool:
        state = self.state(device_id)
        return state is not None and state.active

    def authenticate(self, bearer: str) -> str | None:
        """The device a `<device id>:<secret>` token proves, or None (unknown, revoked, rotated or malformed)."""
        device_id, _, secret = bearer.partition(":")
        if not secret or not DEVICE_ID.match(device_id):
            return None
        stored = self.active_hashes_of(device_id)
        if stored is None:
            return None
        digest = hashlib.sha256(bearer.encode()).hexdigest()
        with self._lock:
            if self._verified.get(digest) == stored:
                return device_id
        if not verify_secret(secret, stored):
            return None
        with self._lock:
            self._verified[digest] = stored
        return device_id

    def active_hashes_of(self, device_id: str) -> str | None:
        with self.kb.session() as s:
            return s.scalar(select(DeviceCredential.secret_hash).where(DeviceCredential.device_id == device_id))
