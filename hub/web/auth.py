"""Accounts, password hashing, invite tokens and the login rate limit (shared by hub processes via the database).

Passwords are hashed with scrypt (hashlib, N=2^14, r=8, p=1, 16-byte salt; memory-hard, so a stolen database is
slow to crack). Each check takes 16 MiB, so logins check passwords through a `HashGate`: a few at once, never one
per anonymous request (werkzeug runs a thread per request). Invite tokens are 32 random bytes; only their SHA-256
is stored, and they are single-use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from hgen.hub.errors import AuthError, InvalidRequestError, LoginRateLimitedError
from hgen.hub.kb.models import LoginFailure, WebAccount
from hgen.hub.kb.store import KnowledgeBase

SCRYPT_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, KEY_BYTES = 2**14, 8, 1, 16, 32
T = TypeVar("T")
BUSY = "too many logins at once, try again"
HASH_SLOTS, HASH_WAIT_S = 2, 0.5  # password checks at once; how long a login waits for a slot before its 429
ROLES = ("annotator", "operator")
MIN_PASSWORD = 10
ACCOUNT_CHARS, ADDRESS_CHARS = 128, 64  # login_failures columns: longer values are cut, never refused unseen
NAME_PUNCTUATION = set("._-@")  # besides letters and digits of any script (`check_name`)


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


def user_name(name: str) -> str:
    """A user name as stored and compared: NFC, so "José" typed precomposed or with a combining accent is one name."""
    return unicodedata.normalize("NFC", name)


# Letters that show as nothing (Hangul fillers): "admin" + one of them reads as "admin" on the operator page.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
MAX_MARKS = 3  # combining marks on one letter: more draw over the rows around a name


def check_name(name: str) -> str:
    """The stored form of a new user name: letters and digits of any script (annotators are named as they are, "José",
    "王芳", "हिन्दी" with its vowel signs; only ASCII was taken) and . _ - @, 1-64 characters; no spaces, controls or
    blank letters, no mark before any letter, at most MAX_MARKS marks on one."""
    name = user_name(name)
    if not 1 <= len(name) <= 64 or not _name_chars(name):
        raise InvalidRequestError("user names are 1-64 characters: letters and digits (any script) and . _ - @")
    return name


def _name_chars(name: str) -> bool:
    marks = 0
    for i, c in enumerate(name):
        kind = unicodedata.category(c)[0]
        marks = marks + 1 if kind == "M" else 0
        if c in BLANK_LETTERS or (kind == "M" and (i == 0 or marks > MAX_MARKS)):
            return False
        if kind not in "LNM" and c not in NAME_PUNCTUATION:
            return False
    return True


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequestError(f"passwords need at least {MIN_PASSWORD} characters")
    return password


class LoginBusyError(LoginRateLimitedError):
    """Every password-check slot is taken: the login is refused before it hashes anything."""

    code = "web_login_busy"


class HashGate:
    """At most `slots` password checks at once (each scrypt holds 16 MiB): parallel anonymous logins with random
    names, which no per-user lock-out stops, used to raise a hub's memory by 16 MiB each. A login waits up to
    `wait_s` for a slot (a burst of people logging in still gets through), then is refused (LoginBusyError, 429).
    One client address holds at most `per_source` of the slots: a flood of logins with random names from one
    address held them all (12 of 20 right logins of others were refused), and no failure count trips on it.

    The checks run on the gate's own `slots` threads, not on werkzeug's thread per request: glibc keeps a freed
    16 MiB block in the arena of the thread that hashed, so hashing on ever-new threads still grew memory with the
    number of arenas (8 per core)."""

    def __init__(self, slots: int = HASH_SLOTS, wait_s: float = HASH_WAIT_S, per_source: int = 1) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._workers = ThreadPoolExecutor(slots, thread_name_prefix="password-check")
        self.wait_s = wait_s
        self.per_source = per_source
        self._sources: dict[str, int] = {}  # address -> its checks held or waiting for a slot (no entry: none)
        self._changed = threading.Condition()

    def run(self, check: Callable[[], T], source: str = "") -> T:
        """`check()` on a gate thread once this source's share and a slot are free (never queued behind others:
        the slot is held); LoginBusyError when that takes longer than `wait_s`."""
        deadline = time.monotonic() + self.wait_s
        self._enter(source, deadline)
        try:
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise LoginBusyError(BUSY, retry_after_s=1.0)
            try:
                return self._workers.submit(check).result()
            finally:
                self._slots.release()
        finally:
            self._leave(source)

    def __enter__(self) -> None:
        """Hold one slot (tests: a check in progress)."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise LoginBusyError(BUSY, retry_after_s=1.0)

    def __exit__(self, *_: object) -> None:
        self._slots.release()

    def _enter(self, source: str, deadline: float) -> None:
        with self._changed:
            while self._sources.get(source, 0) >= self.per_source:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoginBusyError(BUSY, retry_after_s=1.0)
                self._changed.wait(left)
            self._sources[source] = self._sources.get(source, 0) + 1

    def _leave(self, source: str) -> None:
        with self._changed:
            self._sources[source] -= 1
            if not self._sources[source]:
                del self._sources[source]
            self._changed.notify_all()


@dataclass(frozen=True)
class Account:
    annotator_id: str
    role: str
    epoch: int = 0  # sessions issued under another epoch are over (see Accounts.end_sessions)


class Accounts:
    """People who log in; each is also an annotator of the annotator API (kind `human`).

    Role and session epoch live only here (the knowledge base): a cookie names the account and the epoch it was
    issued under, so any change below ends every session of the account on every hub process at once.
    """

    def __init__(self, kb: KnowledgeBase, clock: Callable[[], float] = time.time, gate: HashGate | None = None) -> None:
        self.kb = kb
        self.clock = clock
        self.gate = gate if gate is not None else HashGate()

    def create(self, name: str, role: str = "annotator", password: str | None = None) -> Account:
        """Add (or reset) an account with a password; a reset or role change ends its sessions."""
        if role not in ROLES:
            raise InvalidRequestError(f"role must be one of {ROLES}, got {role!r}")
        name = check_name(name)
        hashed = hash_password(check_new_password(password)) if password is not None else None
        self.kb.register_annotator(name, "human")
        with self.kb.session() as s:
            account = s.get(WebAccount, name)
            if account is None:
                account = WebAccount(annotator_id=name, created_at=self.clock(), session_epoch=0)
                s.add(account)
            else:
                account.session_epoch = (account.session_epoch or 0) + 1
            account.role, account.password_hash = role, hashed
            account.invite_hash, account.invite_expires = None, None
            s.flush()
            return Account(name, role, account.session_epoch)

    def invite(self, name: str, role: str, ttl_s: float, *, replace: bool = False) -> str:
        """A single-use token with which `name` sets their password; returned once, stored only as a hash. An
        account that has a password is refused unless `replace` (ticked on the form; the hub's own `add-user
        --invite`): the form's invite used to reset and re-role any existing account, an operator's included,
        without a word."""
        name = check_name(name)
        with self.kb.session() as s:
            existing = s.get(WebAccount, name)
            if existing is not None and existing.password_hash is not None and not replace:
                raise InvalidRequestError(f"an account {name!r} ({existing.role}) exists: choose another name, or "
                                          "tick \"reset an existing account\" to replace its password and role")
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
            account.session_epoch = (account.session_epoch or 0) + 1
            return Account(account.annotator_id, account.role, account.session_epoch)

    def authenticate(self, name: str, password: str, source: str = "") -> Account:
        """AuthError for a wrong name or password; LoginBusyError, before any hashing, when the gate is full (or
        `source`, the client's address, holds its share of it). An unknown name hashes a dummy through the same
        gate: it costs what a known one does, in time and in slots."""
        name = user_name(name)
        with self.kb.session() as s:
            account = s.get(WebAccount, name)
            stored = account.password_hash if account is not None else None
            role = account.role if account is not None else ""
            epoch = account.session_epoch if account is not None else 0
        matched = self.gate.run(lambda: verify_password(password, stored or _DUMMY_HASH), source)
        if not matched or stored is None:
            raise AuthError("wrong user name or password")
        return Account(name, role, epoch or 0)

    def get(self, name: str) -> Account | None:
        with self.kb.session() as s:
            account = s.get(WebAccount, name)
            if account is None:
                return None
            return Account(account.annotator_id, account.role, account.session_epoch or 0)

    def end_sessions(self, name: str) -> None:
        """Every session of `name`, on every hub process, is refused from its next request on."""
        end_sessions(self.kb, name)


def end_sessions(kb: KnowledgeBase, name: str) -> None:
    with kb.session() as s:
        s.execute(update(WebAccount).where(WebAccount.annotator_id == name)
                  .values(session_epoch=WebAccount.session_epoch + 1))


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))  # unknown users cost the same time as known ones


class LoginLimiter:
    """Failed logins within `window_s`: at most `max_failures` per (user, address), then that user from that
    address is refused until enough failures age out. Past `account_max` failures of one user from all addresses,
    that user's attempts wait `slow_s` first, and past `global_budget` failures from anyone, every attempt does:
    guessing from many addresses gets slow, and nobody can lock anyone else out. (A lock per user from all
    addresses let anyone keep a chosen person out with 20 guesses every 5 minutes.) Nothing is keyed on the
    address alone either, so people sharing one (a proxy, an office) cannot lock each other out.

    Failures are rows in the knowledge base (table `login_failures`), so every hub process on one database counts
    the same attempts. An attempt is stored as a failure *before* its password is checked and removed only when
    it succeeds: concurrent guesses on several processes cannot all slip under the limit while hashes run.
    """

    def __init__(self, kb: KnowledgeBase, max_failures: int, window_s: float, *, account_max: int | None = None,
                 global_budget: int = 200, slow_s: float = 1.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.kb = kb
        self.max_failures = max_failures
        self.window_s = window_s
        self.account_max = account_max if account_max is not None else 4 * max_failures
        self.global_budget = global_budget
        self.slow_s = slow_s
        self.clock = clock
        self.sleep = sleep

    def begin(self, name: str, address: str) -> float:
        """LoginRateLimitedError when locked out; else this attempt counts as a failure until `succeeded`.
        Returns the delay it waited (the user's or the global budget is spent)."""
        (account, address), now = _key(name, address), self.clock()
        with self.kb.session() as s:
            _serialise_account(s, account)
            s.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window_s))
            rows = s.execute(select(LoginFailure.address, LoginFailure.at)
                             .where(LoginFailure.account == account).order_by(LoginFailure.at)).all()
            self._refuse_if_locked(name, [at for where, at in rows if where == address], now)
            everyone = s.scalar(select(func.count()).select_from(LoginFailure)) or 0
            s.add(LoginFailure(account=account, address=address, at=now))
        delay = self.slow_s if everyone >= self.global_budget or len(rows) >= self.account_max else 0.0
        if delay > 0:
            self.sleep(delay)  # outside the transaction: slowing one attempt never holds up the database
        return delay

    def withdraw(self, name: str, address: str) -> None:
        """An attempt refused before its password was checked (LoginBusyError) is no failure: one row of this
        (user, address) goes. Rows of a pair are interchangeable for the count, so which one is irrelevant, and a
        guess that was checked always keeps its row: nothing slips under the limit."""
        account, address = _key(name, address)
        with self.kb.session() as s:
            newest = s.scalar(select(func.max(LoginFailure.id))
                              .where(LoginFailure.account == account, LoginFailure.address == address))
            if newest is not None:
                s.execute(delete(LoginFailure).where(LoginFailure.id == newest))

    def succeeded(self, name: str, address: str) -> None:
        """The right password: forget this user's failures from this address (the pending attempt too)."""
        account, address = _key(name, address)
        with self.kb.session() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.account == account, LoginFailure.address == address))

    def _refuse_if_locked(self, name: str, pair: list[float], now: float) -> None:
        limit = self.max_failures
        if len(pair) >= limit:  # unlocked once the (len - limit + 1) oldest have left the window
            retry = pair[len(pair) - limit] + self.window_s - now
            raise LoginRateLimitedError(f"too many failed logins for {name[:ACCOUNT_CHARS]!r} from your address; "
                                        f"try again in {retry:.0f} s", retry_after_s=max(1.0, retry))


def _key(name: str, address: str) -> tuple[str, str]:
    return name[:ACCOUNT_CHARS], address[:ADDRESS_CHARS]


def _serialise_account(s: Session, account: str) -> None:
    """PostgreSQL: one transaction per account at a time (count, then insert); SQLite's BEGIN IMMEDIATE already
    serialises every writer."""
    if s.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"login:{account}".encode()).digest()[:8], "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
