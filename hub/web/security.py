"""Sessions and CSRF for the web UI.

The session is Flask's signed cookie (HMAC with `web.secret_key`), holding the user, their role, when they
logged in and a random CSRF token. The login time is checked on every request, so an old cookie stops working
after `web.session_max_age_s` even if a browser keeps it. Every POST must echo the CSRF token (form field
`csrf_token` or header `X-CSRF-Token`).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import MutableMapping
from typing import Any

from hgen.hub.errors import CsrfError, SessionExpiredError

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's CSRF token, created on first use (also before login: the login form needs one)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def check_csrf(session: MutableMapping[str, Any], submitted: str | None) -> None:
    expected = session.get("csrf")
    if not expected or not submitted or not hmac.compare_digest(str(expected), submitted):
        raise CsrfError("the form's security token is missing or invalid (CSRF); reload the page and try again")


def log_in(session: MutableMapping[str, Any], user: str, role: str) -> None:
    """A fresh session (new CSRF token too): nothing from before the login survives it."""
    session.clear()
    session.update({"user": user, "role": role, "issued": time.time(), "csrf": secrets.token_urlsafe(32)})


def current_user(session: MutableMapping[str, Any], max_age_s: float) -> tuple[str, str] | None:
    """(user, role), None when nobody is logged in; SessionExpiredError for a session past its age."""
    user = session.get("user")
    if not user:
        return None
    issued = float(session.get("issued", 0.0))
    if time.time() - issued > max_age_s:
        session.clear()
        raise SessionExpiredError("your session has expired; log in again")
    return str(user), str(session.get("role", "annotator"))
