"""What every route needs: the `WebContext` (one object, passed explicitly) and `require_user`, the one place a
request's session is turned into an account (from the knowledge base, checked on every request)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import abort, g, redirect, request, session, url_for

from hgen.hub.config import HubConfig
from hgen.hub.errors import SessionExpiredError
from hgen.hub.web.auth import Account, Accounts, LoginLimiter
from hgen.hub.web.export_jobs import ExportJobs
from hgen.hub.web.security import client_address, current_user


@dataclass
class WebContext:
    hub: Any  # HubApp (typed loosely: the app module imports this one)
    config: HubConfig
    accounts: Accounts
    limiter: LoginLimiter
    class_names: tuple[str, ...]  # exactly num_classes names
    exports: ExportJobs = field(default_factory=ExportJobs)  # the operator page's export, made in the background

    @property
    def api(self):  # type: ignore[no-untyped-def]
        return self.hub.service.annotators

    def address(self) -> str:
        return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                              self.config.web.trusted_proxies)


def require_user(ctx: WebContext, role: str | None = None) -> Account:
    """The logged-in account, read from the knowledge base: its role, and its session epoch, which must still be
    the cookie's (logout, a password reset, a role change or a pause moved it on). Not logged in: to the login
    page; ended: SessionExpiredError (401); wrong role: 403."""
    found = current_user(session, ctx.config.web.session_max_age_s)
    if found is None:
        abort(redirect(url_for("login")))
    account = ctx.accounts.get(found[0])
    if account is None or account.epoch != found[1]:
        session.clear()
        raise SessionExpiredError("your session has ended (logged out, account changed or paused); log in again")
    g.account = account
    if role is not None and account.role != role:
        abort(403)
    return account
