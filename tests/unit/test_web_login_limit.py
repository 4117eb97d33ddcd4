"""The login rate limit lives in the knowledge base: it holds across hub processes sharing one database (two
HubApps on one SQLite file here; PostgreSQL too), under concurrent guesses, and ends when the window passes.
Password checks (16 MiB of scrypt each) run a few at once: parallel logins past that are refused before hashing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hgen.hub.app import HubApp
from hgen.hub.errors import AuthError, LoginRateLimitedError
from hgen.hub.kb.models import LoginFailure
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.web import PASSWORD, add_people, web_hub
from hgen.hub.web import auth
from hgen.hub.web.auth import Accounts, HashGate, LoginBusyError, LoginLimiter

WINDOW_S = 300.0


@pytest.fixture
def two_hubs(tmp_path: Path) -> Iterator[tuple[HubApp, HubApp]]:
    """Two hub processes' worth of objects (own engines, own web apps, own secrets) on one database file."""
    with web_hub(tmp_path, web={"login_max_failures": 3}) as first, \
            web_hub(tmp_path, web={"login_max_failures": 3}) as second:
        add_people(first)
        yield first, second


@pytest.fixture
def kbs(kb_url: str) -> Iterator[tuple[KnowledgeBase, KnowledgeBase]]:
    first = KnowledgeBase.open(kb_url)
    second = KnowledgeBase.open(kb_url)
    yield first, second
    first.close()
    second.close()


def login(c: FlaskClient, user: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").get_data(as_text=True)).group(1)
    return c.post("/login", data={"username": user, "password": password, "csrf_token": token})


def test_wrong_passwords_spread_over_two_hubs_still_hit_the_limit(two_hubs: tuple[HubApp, HubApp]) -> None:
    clients = [hub.web.app.test_client() for hub in two_hubs]
    for attempt in range(3):  # hub 1, hub 2, hub 1: each saw fewer than 3 itself
        response = login(clients[attempt % 2], "ann", "wrong password!")
        assert response.status_code == 401
    for c, hub in zip(clients, two_hubs):
        locked = login(c, "ann")  # the right password, on either hub
        assert locked.status_code == 429 and "too many failed logins for &#39;ann&#39;" in locked.get_data(as_text=True)
        assert int(locked.headers["Retry-After"]) > 0
        assert hub.service.metrics.get("web_login_rate_limited") == 1
    assert two_hubs[0].service.kb.count(LoginFailure) == 3  # refused attempts add nothing
    assert login(clients[1], "op").status_code == 303  # other users are not affected


def test_lock_out_ends_with_the_window_and_a_success_forgets_failures(kbs: tuple[KnowledgeBase, ...]) -> None:
    clock = Clock()
    a, b = (LoginLimiter(kb, 3, WINDOW_S, clock=clock) for kb in kbs)
    for limiter in (a, b, a):
        limiter.begin("ann", "10.0.0.1")  # each stays a failure: no succeeded() follows
        clock.now += 10
    with pytest.raises(LoginRateLimitedError, match="try again in 270 s") as refused:
        b.begin("ann", "10.0.0.1")
    assert refused.value.retry_after_s == pytest.approx(WINDOW_S - 30)
    b.begin("ann", "10.0.0.2")  # another address is its own (user, address) pair
    clock.now += WINDOW_S - 30 + 0.5  # only the oldest failure has left the window: exactly one more try
    a.begin("ann", "10.0.0.1")
    with pytest.raises(LoginRateLimitedError):
        b.begin("ann", "10.0.0.1")
    b.succeeded("ann", "10.0.0.1")  # the right password (on the other process): this pair starts from zero
    for limiter in (a, b, a):
        limiter.begin("ann", "10.0.0.1")
    with pytest.raises(LoginRateLimitedError):
        b.begin("ann", "10.0.0.1")


def test_many_names_from_one_address_slow_everyone_but_lock_out_nobody(kbs: tuple[KnowledgeBase, ...]) -> None:
    """Issue 16: one address spraying names (or everyone behind one proxy) must not lock that address out;
    past the global budget each attempt is slowed instead, on both processes."""
    clock, slept = Clock(), []
    a, b = (LoginLimiter(kb, 2, WINDOW_S, global_budget=4, slow_s=0.5, clock=clock, sleep=slept.append)
            for kb in kbs)
    for i, limiter in enumerate((a, b, a, b)):  # 4 names, one failure each: under the per-name limit of 2
        assert limiter.begin(f"user{i}", "10.0.0.9") == 0.0
    assert a.begin("someone-else", "10.0.0.9") == 0.5  # budget spent: slowed, not refused
    b.succeeded("someone-else", "10.0.0.9")
    assert slept == [0.5]


def test_one_account_from_many_addresses_is_slowed_and_never_locked_out(kbs: tuple[KnowledgeBase, ...]) -> None:
    """A lock per user from all addresses let anyone keep a chosen person out (20 wrong guesses every 5 minutes
    refused the operator's right password from their own address): past the user's budget, attempts are slowed."""
    clock, slept = Clock(), []
    a, b = (LoginLimiter(kb, 2, WINDOW_S, account_max=3, slow_s=0.5, clock=clock, sleep=slept.append) for kb in kbs)
    for i, limiter in enumerate((a, b, a)):
        assert limiter.begin("ann", f"10.0.0.{i}") == 0.0
    assert b.begin("ann", "10.0.0.99") == 0.5  # the real person, elsewhere: slowed, not refused
    b.succeeded("ann", "10.0.0.99")
    assert b.begin("bob", "10.0.0.99") == 0.0  # other accounts are untouched
    assert slept == [0.5]


def test_concurrent_guesses_on_two_processes_never_exceed_the_limit(kbs: tuple[KnowledgeBase, ...]) -> None:
    limiters = [LoginLimiter(kb, 3, WINDOW_S) for kb in kbs]
    threads_n = 8
    start = threading.Barrier(threads_n)
    passed: list[int] = []
    refused: list[int] = []

    def guess(i: int) -> None:
        start.wait(timeout=30)
        try:
            limiters[i % 2].begin("ann", "10.0.0.1")
            passed.append(i)
        except LoginRateLimitedError:
            refused.append(i)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(passed) == 3 and len(refused) == threads_n - 3, (passed, refused)
    assert kbs[0].count(LoginFailure) == 3


class BlockedHashes:
    """Stands in for verify_password: each call says it started, then waits for `release` (no sleeps)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []
        self.real = auth.verify_password

    def __call__(self, password: str, stored: str | None) -> bool:
        self.calls.append(password)
        self.started.set()
        assert self.release.wait(timeout=30)
        return self.real(password, stored)


def test_logins_past_the_hash_slots_are_refused_before_hashing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Random names never lock out, so 60 parallel anonymous logins each held a 16 MiB scrypt (+526 MB)."""
    hashes = BlockedHashes()
    monkeypatch.setattr(auth, "verify_password", hashes)
    with web_hub(tmp_path, web={"login_concurrent_hashes": 1}) as hub:
        add_people(hub)
        first: list[int] = []
        holder = threading.Thread(target=lambda: first.append(login(hub.web.app.test_client(), "ann").status_code))
        holder.start()
        assert hashes.started.wait(timeout=30)  # "ann" holds the only slot
        busy = login(hub.web.app.test_client(), "random-name-1", "x" * 1000)
        assert busy.status_code == 429 and "too many logins at once, try again" in busy.get_data(as_text=True)
        assert busy.headers["Retry-After"] == "1"
        assert len(hashes.calls) == 1  # the refused login hashed nothing
        assert hub.service.metrics.get("web_login_busy") == 1
        assert hub.service.kb.count(LoginFailure) == 1  # ann's pending check only: a refusal is no failure
        hashes.release.set()
        holder.join(timeout=30)
        assert first == [303] and hub.service.kb.count(LoginFailure) == 0
        assert login(hub.web.app.test_client(), "random-name-1", "wrong password!").status_code == 401  # slot freed


def test_an_unknown_name_is_checked_against_a_dummy_through_the_same_gate(
        kbs: tuple[KnowledgeBase, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown names cost a hash like known ones (no timing oracle), so they must queue for a slot like them. The
    hash runs on the gate's own thread (glibc keeps a freed 16 MiB block per hashing thread's arena)."""
    checked: list[tuple[str | None, str]] = []

    def verify(password: str, stored: str | None) -> bool:
        checked.append((stored, threading.current_thread().name))
        return False

    monkeypatch.setattr(auth, "verify_password", verify)
    gate = HashGate(slots=1, wait_s=0.0)
    accounts = Accounts(kbs[0], gate=gate)
    for _ in range(2):
        with pytest.raises(AuthError):
            accounts.authenticate("nobody", "a password guess")
    assert [stored for stored, _ in checked] == [auth._DUMMY_HASH] * 2
    assert len({thread for _, thread in checked}) == 1 and checked[0][1].startswith("password-check")
    with gate, pytest.raises(LoginBusyError):  # the only slot taken
        accounts.authenticate("nobody", "a password guess")
    assert len(checked) == 2


def test_an_attempt_refused_before_its_check_is_withdrawn_and_nothing_more(kbs: tuple[KnowledgeBase, ...]) -> None:
    a, b = (LoginLimiter(kb, 2, WINDOW_S) for kb in kbs)
    a.begin("ann", "10.0.0.1")
    b.begin("ann", "10.0.0.1")  # busy: refused before hashing
    b.withdraw("ann", "10.0.0.1")
    a.withdraw("bob", "10.0.0.1")  # nothing of bob's: nothing goes
    a.begin("ann", "10.0.0.1")  # the checked attempt still counts: one more, then locked
    with pytest.raises(LoginRateLimitedError):
        b.begin("ann", "10.0.0.1")
    assert kbs[0].count(LoginFailure) == 2


def test_one_address_holds_at_most_its_share_of_the_hash_slots(kbs: tuple[KnowledgeBase, ...],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of logins with random names from one address held both slots, and 12 of 20 right logins of other
    people were refused; refusals for a slot count as no failure, so nothing tripped. Now one address holds one."""
    hashes = BlockedHashes()
    monkeypatch.setattr(auth, "verify_password", hashes)
    accounts = Accounts(kbs[0], gate=HashGate(slots=2, wait_s=0.0))
    flood = threading.Thread(target=lambda: pytest.raises(AuthError, accounts.authenticate, "random-1", "guess",
                                                          "10.0.0.66"))
    flood.start()
    assert hashes.started.wait(timeout=30)  # the flood's first check holds a slot
    with pytest.raises(LoginBusyError):  # its second waits for its own share, not the free slot
        accounts.authenticate("random-2", "guess", "10.0.0.66")
    hashes.release.set()
    with pytest.raises(AuthError):  # another address takes the free slot
        accounts.authenticate("nobody", "a guess", "10.0.0.7")
    flood.join(timeout=30)
    assert hashes.calls == ["guess", "a guess"]
