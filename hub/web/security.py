"""Sessions and CSRF for the web UI.

The session is Flask's signed cookie (HMAC with `web.secret_key`), holding the user, the account's session
epoch when they logged in, the login time and a random CSRF token. Never the role: that is read from the
knowledge base on every request, with the epoch, so logout, a password reset, a role change or a pause
(each bumps the epoch) ends every copy of the cookie at once. The login time is checked too, so an old cookie
stops working after `web.session_max_age_s` even if a browser keeps it. Every POST must echo the CSRF token (form field
`csrf_token` or header `X-CSRF-Token`).
"""

from __future__ import annotations

import hmac
import ipaddress
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


def log_in(session: MutableMapping[str, Any], user: str, epoch: int) -> None:
    """A fresh session (new CSRF token too): nothing from before the login survives it."""
    session.clear()
    session.update({"user": user, "epoch": epoch, "issued": time.time(), "csrf": secrets.token_urlsafe(32)})


def current_user(session: MutableMapping[str, Any], max_age_s: float) -> tuple[str, int] | None:
    """(user, session epoch), None when nobody is logged in; SessionExpiredError for a session past its age."""
    user = session.get("user")
    if not user:
        return None
    issued = float(session.get("issued", 0.0))
    if time.time() - issued > max_age_s:
        session.clear()
        raise SessionExpiredError("your session has expired; log in again")
    epoch = session.get("epoch")
    if not isinstance(epoch, int):  # a cookie from before epochs (or forged shape): log in again
        session.clear()
        raise SessionExpiredError("your session has ended; log in again")
    return str(user), epoch


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer's, unless the peer is a configured trusted proxy; then the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries further left are the client's own claims).
    Without trusted proxies the header is ignored, so nobody can pose as another address by sending it."""
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]
    address = peer or "?"
    if not _within(address, networks) or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")][-16:]):
        if not _is_ip(hop):
            break  # a malformed hop: trust nothing beyond it
        address = hop
        if not _within(hop, networks):
            break
    return address


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def within_networks(address: str, trusted: tuple[str, ...]) -> bool:
    """Is `address` one of the configured networks (IPs or CIDRs, e.g. `web.trusted_proxies`)?"""
    return _within(address, [ipaddress.ip_network(t, strict=False) for t in trusted])


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return _is_ip(address) and any(ipaddress.ip_address(address) in n for n in networks)
