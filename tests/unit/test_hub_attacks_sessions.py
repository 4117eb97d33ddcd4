"""Issue 16, people: a captured session dies with logout, a password reset, a role change or a pause (the role is
the knowledge base's, never the cookie's); failed logins cannot lock out others sharing an address; invite links
use the configured public URL and keep their token out of every URL a server logs; gold pages look like others;
no link makes a page show a message its author wrote."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from hgen.hub.app import HubApp
from hgen.hub.kb.models import AnnotatorPause, WebAccount
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.web import PASSWORD, add_people, logged_in, web_hub
from hgen.hub.web.auth import Accounts
from hgen.hub.web.security import client_address
from hgen.hub.web.server import RedactSecrets

COOKIE = "hgen_session"
ENDED = (302, 401)  # the first request of an ended session gets 401 and clears it; later ones go to /login


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, web={"login_max_failures": 3, "login_global_budget": 10, "login_slow_s": 0.01,
                                "public_url": "https://hub.example.org/"}) as app:
        add_people(app, annotators=("ann",), operators=("op", "op2"))
        yield app


def token_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def stolen_copy(hub: HubApp, c: FlaskClient) -> FlaskClient:
    """Another browser holding the same cookie (captured from the network, a shared machine, a backup)."""
    thief = hub.web.app.test_client()
    thief.set_cookie(COOKIE, c.get_cookie(COOKIE).value)
    return thief


def invite_attempt(c: FlaskClient, token: str, name: str = "mallory") -> int:
    """An operator invite posted with the session's own CSRF token `token` (read while the page still opened)."""
    return c.post("/operator/invite", data={"name": name, "role": "operator", "csrf_token": token}).status_code


def test_logout_ends_every_copy_and_every_session_of_the_account(hub: HubApp) -> None:
    op = logged_in(hub, "op")
    thief, other_tab = stolen_copy(hub, op), logged_in(hub, "op")
    assert thief.get("/operator").status_code == 200
    token = token_of(thief.get("/operator").get_data(as_text=True))
    assert op.post("/logout", data={"csrf_token": token_of(op.get("/operator").get_data(as_text=True))}
                   ).status_code == 303
    assert thief.post("/operator/invite", data={"name": "mallory", "role": "operator", "csrf_token": token}
                      ).status_code == 401  # before issue 16: 303, an operator invite created
    assert thief.get("/operator").status_code in ENDED  # before: 200
    assert other_tab.get("/operator").status_code == 401
    assert Accounts(hub.service.kb).get("mallory") is None
    assert logged_in(hub, "op").get("/operator").status_code == 200  # logging in again works


def test_reinvite_as_annotator_demotes_every_session_at_once(hub: HubApp) -> None:
    op = logged_in(hub, "op")
    thief = stolen_copy(hub, op)
    stolen_token = token_of(thief.get("/operator").get_data(as_text=True))
    op2 = logged_in(hub, "op2")
    token = token_of(op2.get("/operator").get_data(as_text=True))
    assert op2.post("/operator/invite", data={"name": "op", "role": "annotator", "replace": "1",
                                              "csrf_token": token}).status_code == 303  # op re-invited as an annotator: the old password is refused
    assert invite_attempt(thief, stolen_token) == 401  # before issue 16: 303, an operator invite created
    assert op.get("/operator").status_code == 401 and thief.get("/operator").status_code in ENDED  # before: 200
    Accounts(hub.service.kb).create("op", "annotator", PASSWORD)  # op accepted (a password again)
    demoted = logged_in(hub, "op")
    assert demoted.get("/operator").status_code == 403  # the role is the knowledge base's
    assert invite_attempt(demoted, token_of(demoted.get("/annotate").get_data(as_text=True))) == 403
    assert Accounts(hub.service.kb).get("mallory") is None


def test_role_change_and_password_reset_end_sessions_and_the_cookie_holds_no_role(hub: HubApp) -> None:
    op = logged_in(hub, "op")
    serializer = hub.web.app.session_interface.get_signing_serializer(hub.web.app)
    assert "role" not in serializer.loads(op.get_cookie(COOKIE).value)
    token = token_of(op.get("/operator").get_data(as_text=True))
    Accounts(hub.service.kb).create("op", "annotator", PASSWORD)  # role change (and password reset)
    assert invite_attempt(op, token) == 401
    assert op.get("/operator").status_code in ENDED
    ann = logged_in(hub, "ann")
    Accounts(hub.service.kb).create("ann", "annotator", "a brand new password")
    assert ann.get("/annotate").status_code == 401


def test_pausing_ends_the_annotators_sessions_and_unknown_names_are_refused(hub: HubApp) -> None:
    ann, op = logged_in(hub, "ann"), logged_in(hub, "op")
    token = token_of(op.get("/operator").get_data(as_text=True))
    assert op.post("/operator/annotator", data={"annotator": "ann", "action": "pause", "csrf_token": token}
                   ).status_code == 303
    assert ann.get("/annotate").status_code == 401
    assert "You are paused" in logged_in(hub, "ann").get("/annotate").get_data(as_text=True)
    unknown = op.post("/operator/annotator", data={"annotator": "nobody", "action": "pause", "csrf_token": token})
    assert unknown.status_code == 400  # before issue 16: IntegrityError, 500
    assert hub.service.kb.count(AnnotatorPause) == 1


def test_failed_logins_with_many_names_from_one_address_lock_nobody_out(hub: HubApp) -> None:
    c = hub.web.app.test_client()
    for i in range(50):  # spraying from one address: 50 names, 50 wrong passwords
        response = c.post("/login", data={"username": f"user{i}", "password": "wrong password!",
                                          "csrf_token": token_of(c.get("/login").get_data(as_text=True))})
        assert response.status_code == 401
    for user in ("ann", "op"):  # the right people from the same address still get in (slowed, not locked)
        logged_in(hub, user)
    assert hub.service.metrics.get("web_login_rate_limited") == 0


def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    assert client_address("10.0.0.5", "1.2.3.4", ()) == "10.0.0.5"  # nobody trusted: the header is ignored
    assert client_address("10.0.0.5", "6.6.6.6, 1.2.3.4", ("10.0.0.0/24",)) == "1.2.3.4"
    assert client_address("10.0.0.5", "1.2.3.4, 10.0.0.7", ("10.0.0.0/24",)) == "1.2.3.4"
    assert client_address("10.0.0.5", "junk, 1.2.3.4", ("10.0.0.0/24",)) == "1.2.3.4"
    assert client_address("9.9.9.9", "1.2.3.4", ("10.0.0.0/24",)) == "9.9.9.9"
    with web_hub(tmp_path, web={"login_max_failures": 2, "trusted_proxies": ["127.0.0.1"]}) as app:
        add_people(app)
        c = app.web.app.test_client()
        for _ in range(2):
            c.post("/login", data={"username": "ann", "password": "wrong password!",
                                   "csrf_token": token_of(c.get("/login").get_data(as_text=True))},
                   headers={"X-Forwarded-For": "203.0.113.9"})
        locked = c.post("/login", data={"username": "ann", "password": PASSWORD,
                                        "csrf_token": token_of(c.get("/login").get_data(as_text=True))},
                        headers={"X-Forwarded-For": "203.0.113.9"})
        assert locked.status_code == 429
        other = app.web.app.test_client()  # ann from another client behind the same proxy is not locked out
        assert other.post("/login", data={"username": "ann", "password": PASSWORD,
                                          "csrf_token": token_of(other.get("/login").get_data(as_text=True))},
                          headers={"X-Forwarded-For": "203.0.113.10"}).status_code == 303


def test_invite_link_uses_the_public_url_and_no_url_carries_its_token(hub: HubApp) -> None:
    op = logged_in(hub, "op")
    token = token_of(op.get("/operator").get_data(as_text=True))
    created = op.post("/operator/invite", data={"name": "newbie", "role": "annotator", "csrf_token": token})
    assert created.status_code == 303 and "token" not in created.headers["Location"]
    link = re.search(r'id="invite-link">([^<]+)<', op.get("/operator").get_data(as_text=True)).group(1)
    assert link.startswith("https://hub.example.org/join#token=")  # never the request's Host (localhost here)
    assert "invite-link" not in op.get("/operator").get_data(as_text=True)  # shown once
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s - - "%s" 200', ("127.0.0.1",
                               "GET /join?token=s3cr3t&x=1 HTTP/1.1"), None)
    RedactSecrets().filter(record)
    assert "s3cr3t" not in record.getMessage() and "token=[redacted]" in record.getMessage()
    c = hub.web.app.test_client()
    assert 'id="join-token"' in c.get("/join").get_data(as_text=True)
    invite = link.split("#token=")[1]
    joined = c.post("/join", data={"token": invite, "password": "a new long password",
                                   "csrf_token": token_of(c.get("/join").get_data(as_text=True))})
    assert joined.status_code == 303


def test_no_link_makes_a_page_say_what_its_author_chose(hub: HubApp) -> None:
    """`/operator?message=...` was shown in the hub's own message box (escaped, yet a link could make the hub tell
    the operator "Your password expired, go to evil.example"). The hub's own outcomes still show, once, carried by
    the signed session, and no redirect carries their text."""
    bait = "message=Your%20password%20expired%2C%20go%20to%20evil.example"
    op, ann = logged_in(hub, "op"), logged_in(hub, "ann")
    for client, path in [(op, "/operator"), (ann, "/annotate"), (hub.web.app.test_client(), "/login")]:
        page = client.get(f"{path}?{bait}").get_data(as_text=True)
        assert "evil.example" not in page and 'id="message"' not in page, path
    token = token_of(op.get("/operator").get_data(as_text=True))
    outcomes = [("/operator/annotator", {"annotator": "ann", "action": "pause"}, "ann: paused"),
                ("/operator/retrain", {"model": "m"}, "retraining is off (retrain.enabled: false)"),
                ("/operator/invite", {"name": "newbie", "role": "annotator"}, "invite for newbie created")]
    for path, form, said in outcomes:
        done = op.post(path, data={**form, "csrf_token": token})
        assert done.status_code == 303 and done.headers["Location"] == "/operator", path
        assert f'<p class="message" id="message">{said}</p>' in op.get("/operator").get_data(as_text=True)
        assert 'id="message"' not in op.get("/operator").get_data(as_text=True)  # said once


def test_gold_pages_show_the_models_guesses_like_every_task(hub: HubApp) -> None:
    op = logged_in(hub, "op")
    token = token_of(op.get("/operator").get_data(as_text=True))
    added = op.post("/operator/gold", data={"class_id": "2", "csrf_token": token,
                                            "image": (io.BytesIO(png_image(seed=1).data), "g.png")},
                    content_type="multipart/form-data")
    assert added.status_code == 303
    sample = make_sample("cam-1", confidence=0.4, top=3)
    hub.service.submit(make_request("cam-1", [sample], m=1), "grpc")
    ann = logged_in(hub, "ann")
    hub.service.gold.draw = lambda: 0.0  # gold at the first place of its run of tasks
    pages = []
    for _ in range(2):  # the first task is gold, then the device's
        page = ann.get("/annotate").get_data(as_text=True)
        pages.append(page)
        task_id = re.search(r'data-task="([^"]+)"', page).group(1)
        ann.post(f"/task/{task_id}/answer", data={"class_id": "2", "kind": "class", "csrf_token": token_of(page)})
    assert hub.service.gold.rating("ann").answered == 1
    for page in pages:
        assert page.count("<li>") == 3 and 'id="guesses"' in page
    assert hub.service.kb.count(WebAccount) == 3
