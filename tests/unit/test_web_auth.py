"""Web UI security: hashed passwords, no default secret, login rate limit, expired sessions, CSRF, invites."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import HubConfigError
from hgen.hub.testing.web import PASSWORD, add_people, web_hub
from hgen.hub.web.auth import hash_password, verify_password


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, web={"login_max_failures": 3, "session_max_age_s": 600}) as app:
        add_people(app)
        yield app


def client(hub: HubApp) -> FlaskClient:
    return hub.web.app.test_client()


def csrf(c: FlaskClient, path: str = "/login") -> str:
    page = c.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(c: FlaskClient, user: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    return c.post("/login", data={"username": user, "password": password, "csrf_token": csrf(c)})


def test_passwords_are_scrypt_hashed_and_salted() -> None:
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first.startswith("scrypt$16384$8$1$") and first != second and "s3cret" not in first
    assert verify_password("s3cret-pass", first) and not verify_password("s3cret-Pass", first)
    assert not verify_password("anything", None) and not verify_password("anything", "md5$abc")


def test_web_ui_needs_a_long_secret_and_has_no_default() -> None:
    with pytest.raises(HubConfigError, match="secret_key is required"):
        parse_hub_config({"web": {"enabled": True}})
    with pytest.raises(HubConfigError, match="at least 32"):
        parse_hub_config({"web": {"enabled": True, "secret_key": "short"}})
    # the operator guide's placeholder was accepted, and a cookie signed with it passed on the 4th guess
    for typed in ("replace with 32 or more random characters", "k" * 40, "abcabcabcabcabcabcabcabcabcabcabc"):
        with pytest.raises(HubConfigError, match="looks typed, not generated"):
            parse_hub_config({"web": {"enabled": True, "secret_key": typed}})
    import secrets

    parse_hub_config({"web": {"enabled": True, "secret_key": secrets.token_urlsafe(32)}})


def test_login_and_role_routing(hub: HubApp) -> None:
    c = client(hub)
    assert login(c, "ann").headers["Location"].endswith("/")
    assert c.get("/").headers["Location"].endswith("/annotate")
    assert c.get("/operator").status_code == 403  # annotators are not operators
    o = client(hub)
    login(o, "op")
    assert o.get("/operator").status_code == 200


def test_the_operator_sees_how_much_of_the_model_s_field_errors_each_retrain_s_gate_sends(hub: HubApp) -> None:
    store = hub.retrain_store
    refit = store.create_run("m", "threshold", "1.0.0")
    store.finish_run(refit.id, "published", to_version="1.0.1",
                     metrics={"field": {"tau": 0.4, "caught_errors": 0.234, "samples": 62}})
    plain = store.create_run("m", "threshold", "1.0.1")
    store.finish_run(plain.id, "published", to_version="1.0.2", metrics={})  # no field re-fit: nothing to say
    o = client(hub)
    login(o, "op")
    cells = re.findall(r'<td class="caught-errors">([^<]*)</td>', o.get("/operator").get_data(as_text=True))
    assert sorted(cells) == ["-", "0.23 of 62 labels"]


def test_wrong_password_is_rate_limited_even_for_the_right_one_later(hub: HubApp) -> None:
    c = client(hub)
    for _ in range(3):
        response = login(c, "ann", "wrong password!")
        assert response.status_code == 401 and "wrong user name or password" in response.get_data(as_text=True)
    locked = login(c, "ann")  # right password, but locked out
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "too many failed logins" in locked.get_data(as_text=True)
    assert hub.service.metrics.get("web_login_rate_limited") == 1
    assert login(client(hub), "op").status_code == 303  # other users are not affected


def test_expired_session_must_log_in_again(hub: HubApp) -> None:
    c = client(hub)
    login(c, "ann")
    assert c.get("/annotate").status_code == 200
    with c.session_transaction() as session:  # the same signed cookie, logged in 20 minutes ago
        session["issued"] = time.time() - 1200
    response = c.get("/annotate")
    assert response.status_code == 401 and "session has expired" in response.get_data(as_text=True)
    assert c.get("/annotate").status_code == 302  # the session was cleared: back to the login page


def test_forged_or_missing_csrf_token_is_refused(hub: HubApp) -> None:
    c = client(hub)
    login(c, "op")
    for token in ("forged-token", None):
        data = {"name": "mallory", "role": "operator"} | ({"csrf_token": token} if token else {})
        response = c.post("/operator/invite", data=data)
        assert response.status_code == 403 and "CSRF" in response.get_data(as_text=True)
    no_token = client(hub).post("/login", data={"username": "op", "password": PASSWORD})
    assert no_token.status_code == 403  # even the login form needs its token
    from hgen.hub.web.auth import Accounts

    assert Accounts(hub.service.kb).get("mallory") is None  # nothing was created


def test_invite_link_sets_a_password_once(hub: HubApp) -> None:
    o = client(hub)
    login(o, "op")
    page = o.post("/operator/invite", data={"name": "newbie", "role": "annotator", "csrf_token": csrf(o, "/operator")},
                  follow_redirects=True).get_data(as_text=True)
    link = re.search(r'id="invite-link">([^<]+)<', page).group(1)
    token = re.search(r"token=([^&\s]+)", link).group(1)
    c = client(hub)
    joined = c.post("/join", data={"token": token, "password": "a new long password", "csrf_token": csrf(c)})
    assert joined.status_code == 303 and c.get("/annotate").status_code == 200
    again = client(hub)
    reused = again.post("/join", data={"token": token, "password": "another password!", "csrf_token": csrf(again)})
    assert reused.status_code == 401 and "unknown, used or expired" in reused.get_data(as_text=True)
    assert login(client(hub), "newbie", "a new long password").status_code == 303


def test_inviting_an_existing_account_is_refused_and_changes_nothing(hub: HubApp) -> None:
    """The form used to reset and demote any account: inviting "op2" as an annotator took an operator's password
    and role without a word. A pending invite (no password yet) may still be sent again."""
    from hgen.hub.web.auth import Accounts

    accounts = Accounts(hub.service.kb)
    accounts.create("op2", "operator", "op2's long password")
    o = client(hub)
    login(o, "op")
    page = o.post("/operator/invite", data={"name": "op2", "role": "annotator", "csrf_token": csrf(o, "/operator")},
                  follow_redirects=True).get_data(as_text=True)
    assert "an account &#39;op2&#39; (operator) exists: choose another name" in page and "invite-link" not in page
    assert 'id="invite-replace"' in page  # resetting it is a deliberate tick
    assert accounts.get("op2").role == "operator"
    assert login(client(hub), "op2", "op2's long password").status_code == 303
    for _ in range(2):  # a pending invite: sent again, a new link
        again = o.post("/operator/invite", data={"name": "newbie2", "role": "annotator",
                                                 "csrf_token": csrf(o, "/operator")}, follow_redirects=True)
        assert 'id="invite-link"' in again.get_data(as_text=True)


def test_the_hubs_counters_show_to_operators_and_to_a_scraper_with_the_token(tmp_path: Path) -> None:
    """The counters the docs name (device_auth_refused, per error code, ...) were visible nowhere."""
    from hgen.hub.testing.web import add_people, logged_in, web_hub

    token = "a scraper's token, long enough"
    with web_hub(tmp_path, web={"metrics_token": token}) as app:
        add_people(app)
        app.service.metrics.inc("device_auth_refused", 2)
        scraper = app.web.app.test_client()
        assert scraper.get("/metrics").status_code == 401
        assert scraper.get("/metrics", headers={"Authorization": "Bearer guess-guess-guess"}).status_code == 401
        scraped = scraper.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "hgen_hub_device_auth_refused_total 2" in scraped.get_data(True)
        page = logged_in(app, "op").get("/operator").get_data(as_text=True)
        assert "<td>device_auth_refused</td><td>2</td>" in page
    with web_hub(tmp_path / "off") as app:  # no token: not served at all
        assert app.web.app.test_client().get("/metrics").status_code == 404


def test_annotators_are_named_in_their_own_script_and_log_in_however_accents_are_typed(hub: HubApp) -> None:
    """Only ASCII names were taken: "José" or "王芳" could not be invited. A name is stored NFC, so "José" typed with
    a combining accent (NFD) logs in to the same account; spaces, markup and a leading mark stay refused."""
    o = client(hub)
    login(o, "op")
    refused = ("<b>x</b>", "a b", "\u0301a", "admin\u3164", "a" + "\u0332" * 4)  # markup, space, blank, marks
    for name in ("Jose\u0301", "王芳", "हिन्दी", *refused):
        page = o.post("/operator/invite", data={"name": name, "role": "annotator",
                                                "csrf_token": csrf(o, "/operator")},
                      follow_redirects=True).get_data(as_text=True)
        link = re.search(r'id="invite-link">([^<]+)<', page)
        if name in refused:
            assert link is None and "letters and digits (any script)" in page
            continue
        token = re.search(r"token=([^&\s]+)", link.group(1)).group(1)
        c = client(hub)
        assert c.post("/join", data={"token": token, "password": "a new long password",
                                     "csrf_token": csrf(c)}).status_code == 303
    assert login(client(hub), "José", "a new long password").status_code == 303  # NFC typed, NFD invited
    assert login(client(hub), "Jose\u0301", "a new long password").status_code == 303
    assert login(client(hub), "王芳", "a new long password").status_code == 303
