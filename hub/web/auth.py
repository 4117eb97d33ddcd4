"""Accounts, password hashing, invite tokens and the login rate limit (shared by hub processes via the database).

Passwords are hashed with scrypt (hashlib, N=2^14, r=8, p=1, 16-byte salt; memory-hard, so a stolen database is
slow to crack). Invite tokens are 32 random bytes; only their SHA-256 is stored, and they are single-use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from hgen.hub.errors import AuthError, InvalidRequestError, LoginRateLimitedError
from hgen.hub.kb.models import LoginFailure, WebAccount
from hgen.hub.kb.store import KnowledgeBase

SCRYPT_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, KEY_BYTES = 2**14, 8, 1, 16, 32
ROLES = ("annotator", "operator")
MIN_PASSWORD = 10
ACCOUNT_CHARS, ADDRESS_CHARS = 128, 64  # login_failures columns: longer values are cut, never refused unseen
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(key).decode()])


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check; a missing or malformed hash is simply a mismatch."""
    try:
        scheme, n, r, p, salt, key = (stored or "").split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= NAME_CHARS:
        raise InvalidRequestError("user names are 1-64 characters: letters, digits and . _ - @")
    return name


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequestError(f"passwords need at least {MIN_PASSWORD} characters")
    return password


@dataclass(frozen=True)
class Account:
    annotator_id: str
    role: str


class Accounts:
    """People who log in; each is also an annotator of the annotator API (kind `human`)."""

    def __init__(self, kb: KnowledgeBase, clock: Callable[[], float] = time.time) -> None:
        self.kb = kb
        self.clock = clock

    def create(self, name: str, role: str = "annotator", password: str | None = None) -> Account:
        """Add (or reset) an account with a password."""
        if role not in ROLES:
            raise InvalidRequestError(f"role must be one of {ROLES}, got {role!r}")
        check_name(name)
        hashed = hash_password(check_new_password(password)) if password is not None else None
        self.kb.register_annotator(name, "human")
        with self.kb.session() as s:
            s.merge(WebAccount(annotator_id=name, role=role, password_hash=hashed, invite_hash=None,
                               invite_expires=None, created_at=self.clock()))
        return Account(name, role)

    def invite(self, name: str, role: str, ttl_s: float) -> str:
        """A single-use token with which `name` sets their password; returned once, stored only as a hash."""
        self.create(name, role)
        token = secrets.token_urlsafe(32)
        with self.kb.session() as s:
            account = s.get(WebAccount, name)
            account.password_hash = None
            account.invite_hash = token_digest(token)
            account.invite_expires = self.clock() + ttl_s
        return token

    def accept_invite(self, token: str, password: str) -> Account:
        check_new_password(password)
        with self.kb.session() as s:
            account = s.scalars(select(WebAccount).where(WebAccount.invite_hash == token_digest(token))).first()
            if account is None or (account.invite_expires or 0.0) < self.clock():
                raise AuthError("this invite link is unknown, used or expired; ask the operator for a new one")
            account.password_hash = hash_password(password)
            account.invite_hash = None
            account.invite_expires = None
            return Account(account.annotator_id, account.role)

    def authenticate(self, name: str, password: str) -> Account:
        with self.kb.session() as s:
            account = s.get(WebAccount, name)
            stored = account.password_hash if account is not None else None
            role = account.role if account is not None else ""
        if not verify_password(password, stored or _DUMMY_HASH) or stored is None:
            raise AuthError("wrong user name or password")
        return Account(name, role)

    def get(self, name: str) -> Account | None:
        with self.kb.session() as s:
            account = s.get(WebAccount, name)
            return Account(account.annotator_id, account.role) if account is not None else None


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))  # unknown users cost the same time as known ones


class LoginLimiter:
    """At most `max_failures` failed logins per (user, address) and `address_factor` times that per address (any
    user names: password spraying) within `window_s`; then refused until enough of them age out of the window.

    Failures are rows in the knowledge base (table `login_failures`), so every hub process on one database counts
    the same attempts. An attempt is stored as a failure *before* its password is checked and removed only when
    it succeeds: concurrent guesses on several processes cannot all slip under the limit while hashes run.
    """

    def __init__(self, kb: KnowledgeBase, max_failures: int, window_s: float, *, address_factor: int = 10,
                 clock: Callable[[], float] = time.time) -> None:
        self.kb = kb
        self.max_failures = max_failures
        self.window_s = window_s
        self.address_max = max_failures * address_factor
        self.clock = clock

    def begin(self, name: str, address: str) -> None:
        """LoginRateLimitedError when locked out; else this attempt counts as a failure until `succeeded`."""
        (account, address), now = _key(name, address), self.clock()
        with self.kb.session() as s:
            _serialise_address(s, address)
            s.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window_s))
            rows = s.execute(select(LoginFailure.account, LoginFailure.at)
                             .where(LoginFailure.address == address).order_by(LoginFailure.at)).all()
            self._refuse_if_locked(name, [at for who, at in rows if who == account], [at for _, at in rows], now)
            s.add(LoginFailure(account=account, address=address, at=now))

    def succeeded(self, name: str, address: str) -> None:
        """The right password: forget this user's failures from this address (the pending attempt too)."""
        account, address = _key(name, address)
        with self.kb.session() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.account == account, LoginFailure.address == address))

    def _refuse_if_locked(self, name: str, mine: list[float], everyone: list[float], now: float) -> None:
        for times, limit, who in ((mine, self.max_failures, f"for {name[:ACCOUNT_CHARS]!r}"),
                                  (everyone, self.address_max, "from your address")):
            if len(times) >= limit:  # unlocked once the (len - limit + 1) oldest have left the window
                retry = times[len(times) - limit] + self.window_s - now
                raise LoginRateLimitedError(f"too many failed logins {who}; try again in {retry:.0f} s",
                                            retry_after_s=max(1.0, retry))


def _key(name: str, address: str) -> tuple[str, str]:
    return name[:ACCOUNT_CHARS], address[:ADDRESS_CHARS]


def _serialise_address(s: Session, address: str) -> None:
    """PostgreSQL: one transaction per address at a time (count, then insert); SQLite's BEGIN IMMEDIATE already
    serialises every writer."""
    if s.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"login:{address}".encode()).digest()[:8], "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
