"""The login rate limit lives in the knowledge base: it holds across hub processes sharing one database (two
HubApps on one SQLite file here; PostgreSQL too), under concurrent guesses, and ends when the window passes."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hgen.hub.app import HubApp
from hgen.hub.errors import LoginRateLimitedError
from hgen.hub.kb.models import LoginFailure
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.web import PASSWORD, add_people, web_hub
from hgen.hub.web.auth import LoginLimiter

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


def test_one_account_from_many_addresses_is_limited(kbs: tuple[KnowledgeBase, ...]) -> None:
    clock = Clock()
    a, b = (LoginLimiter(kb, 2, WINDOW_S, account_max=3, clock=clock) for kb in kbs)
    for i, limiter in enumerate((a, b, a)):
        limiter.begin("ann", f"10.0.0.{i}")
    with pytest.raises(LoginRateLimitedError, match="for 'ann'; try again"):
        b.begin("ann", "10.0.0.99")
    b.begin("bob", "10.0.0.99")  # other accounts are untouched


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
