"""Device credentials: the hub issues each device a random secret, shown once and stored only as hashes.

Two hashes of one secret, one per checker. The broker verifies MQTT CONNECTs against Mosquitto's own slow
PBKDF2-SHA512 format (`$7$`), in the password file rendered from these rows (hgen.hub.broker_acl). The hub checks
gRPC and web bearer tokens (`<device id>:<secret>`) against a SHA-256 digest: the secret is 32 random bytes, so a
guess is as hopeless against the fast digest as against PBKDF2, while the slow hash let anyone who knows a device
id (ids are not secret) make the hub spend ~50 ms of CPU per refused call. Rows issued before the digest existed
(migration 0010) are verified with PBKDF2 until their first success stores it; meanwhile a failed slow check
holds off further slow checks of that device for `SLOW_RETRY_S`. Both are re-read on every call: a revoked or
rotated credential is refused on the very next call, by every hub process sharing the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import select, update

from hgen.hub.errors import BadInputError, HubError
from hgen.hub.kb.models import DeviceCredential
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.names import DEVICE_ID, DEVICE_ID_RULE

log = logging.getLogger(__name__)
ITERATIONS = 100_000  # PBKDF2-SHA512 rounds: ~60 ms per CONNECT at the broker (the hub checks the fast digest)
SALT_BYTES, SECRET_BYTES = 12, 32  # Mosquitto's salt length; 256-bit random secrets
SLOW_RETRY_S = 1.0  # after a failed PBKDF2 check of a row without a digest, that device's next one waits this long


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


def secret_digest(device_id: str, secret: str) -> str:
    """The hub's fast check value: SHA-256 over the device id and its secret. Safe unsalted and unstretched only
    because the hub generates every secret with 256 random bits (`SECRET_BYTES`); the id binds it to its row."""
    return hashlib.sha256(f"hgen-device-secret:{device_id}:{secret}".encode()).hexdigest()


def check_device_id(device_id: str, reserved: Collection[str] = ()) -> str:
    if not DEVICE_ID.match(device_id):
        raise DeviceCredentialError(f"device ids are {DEVICE_ID_RULE}, got {device_id!r}")
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
        self._lock = threading.Lock()
        self._slow_locks: dict[str, threading.Lock] = {}  # device id -> one PBKDF2 check of it at a time
        self._slow_refused_until: dict[str, float] = {}  # device id -> when a failed PBKDF2 check allows another

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
            row.secret_digest = secret_digest(device_id, secret)
            s.add(row)
        log.info("device %s enrolled (target %s)", device_id, target or "any")
        return IssuedCredential(device_id, secret, target, self._changed_keeping_secret())

    def rotate(self, device_id: str) -> IssuedCredential:
        """A new secret for an enrolled device; the old one stops working at once."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        with self.kb.session() as s:
            row = self._enrolled(s, device_id)
            row.secret_hash, row.issued_at = hash_secret(secret), self.clock()
            row.secret_digest = secret_digest(device_id, secret)
            target = row.target
        log.info("device %s: secret rotated", device_id)
        return IssuedCredential(device_id, secret, target, self._changed_keeping_secret())

    def revoke(self, device_id: str) -> None:
        """The device's secret stops working at once (gRPC: next call; MQTT: the broker reload disconnects it)."""
        with self.kb.session() as s:
            row = self._enrolled(s, device_id)
            row.secret_hash, row.secret_digest, row.revoked_at = None, None, self.clock()
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
        """The device a `<device id>:<secret>` token proves, or None (unknown, revoked, rotated or malformed).
        A row with a digest is checked by SHA-256 alone: a refused call costs the hub no more than a granted one."""
        device_id, _, secret = bearer.partition(":")
        if not secret or not DEVICE_ID.match(device_id):
            return None
        stored = self._stored(device_id)
        if stored is None:
            return None
        slow, fast = stored
        if fast is None:
            return device_id if self._check_slow(device_id, secret, slow) else None
        return device_id if hmac.compare_digest(secret_digest(device_id, secret), fast) else None

    def _check_slow(self, device_id: str, secret: str, slow: str) -> bool:
        """PBKDF2 for a row issued before digests existed; a success stores the digest, so it happens once. One
        check per device at a time, and none for `SLOW_RETRY_S` after a failure: guesses at such a device cost at
        most one slow hash a second (its own concurrent first calls wait, then take the fast path)."""
        with self._lock:
            lock = self._slow_locks.setdefault(device_id, threading.Lock())
        with lock:
            stored = self._stored(device_id)
            if stored is None or stored[0] != slow:  # revoked or rotated meanwhile
                return False
            if stored[1] is not None:  # a concurrent call stored it
                return hmac.compare_digest(secret_digest(device_id, secret), stored[1])
            if self.clock() < self._slow_refused_until.get(device_id, float("-inf")):
                return False
            if not verify_secret(secret, slow):
                self._slow_refused_until[device_id] = self.clock() + SLOW_RETRY_S
                return False
            self._slow_refused_until.pop(device_id, None)
            self._store_digest(device_id, slow, secret_digest(device_id, secret))
            return True

    def _store_digest(self, device_id: str, slow: str, digest: str) -> None:
        """Only onto the row the secret was verified against: a rotation since then keeps its own digest."""
        with self.kb.session() as s:
            s.execute(update(DeviceCredential)
                      .where(DeviceCredential.device_id == device_id, DeviceCredential.secret_hash == slow,
                             DeviceCredential.secret_digest.is_(None))
                      .values(secret_digest=digest))
        log.info("device %s: credential upgraded to the fast digest (migration 0010)", device_id)

    def _stored(self, device_id: str) -> tuple[str, str | None] | None:
        """(PBKDF2 hash, digest) of an active credential; None when there is none (unknown or revoked)."""
        with self.kb.session() as s:
            row = s.execute(select(DeviceCredential.secret_hash, DeviceCredential.secret_digest)
                            .where(DeviceCredential.device_id == device_id)).first()
        if row is None or row[0] is None:
            return None
        return row[0], row[1]

    def active_hashes_of(self, device_id: str) -> str | None:
        with self.kb.session() as s:
            return s.scalar(select(DeviceCredential.secret_hash).where(DeviceCredential.device_id == device_id))
