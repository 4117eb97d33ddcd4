"""The Flask application: login / invites, the annotator view, the operator view; errors become clear pages.

`create_web_app(hub)` builds it around a running `HubApp`; nothing is global: routes close over one `WebContext`
(hgen.hub.web.context), registered by routes_auth, routes_annotate and routes_operator. Every input a route
reads goes through a strict form model (hgen.hub.web.forms); every refusal is a BadInputError with a 4xx.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, render_template, request, session

from hgen.hub.config import HubConfig, people_class_names
from hgen.hub.errors import (
    AuthError,
    BadInputError,
    CsrfError,
    HubConfigError,
    ImageTooLargeError,
    LoginRateLimitedError,
    NotAnImageError,
    SessionExpiredError,
    TaskClosedError,
    TaskImageUnavailableError,
    UnknownTaskError,
)
from hgen.hub.web import routes_annotate, routes_auth, routes_device, routes_export, routes_operator
from hgen.hub.web.auth import Accounts, HashGate, LoginLimiter
from hgen.hub.web.context import WebContext
from hgen.hub.web.security import CSRF_FIELD, CSRF_HEADER, check_csrf, csrf_token

HERE = Path(__file__).parent
STATUS = ((LoginRateLimitedError, 429), (SessionExpiredError, 401), (AuthError, 401), (CsrfError, 403),
          (UnknownTaskError, 403), (TaskClosedError, 409), (TaskImageUnavailableError, 503), (NotAnImageError, 415), (ImageTooLargeError, 413),
          (BadInputError, 400))
MAX_UPLOAD = 8 * 1024 * 1024
MAX_FORM_MEMORY = 256 * 1024  # largest non-file field: far above any form the pages send


def create_web_app(hub: Any) -> Flask:
    config: HubConfig = hub.config
    web = config.web
    if web.secret_key is None:
        raise HubConfigError("web.secret_key is required (no default secret)")
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config.update(SECRET_KEY=web.secret_key.get_secret_value(), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=web.cookies_secure,
                      SESSION_COOKIE_NAME="hgen_session", MAX_CONTENT_LENGTH=MAX_UPLOAD,
                      MAX_FORM_MEMORY_SIZE=MAX_FORM_MEMORY, MAX_FORM_PARTS=64,
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=web.session_max_age_s))
    limiter = LoginLimiter(hub.service.kb, web.login_max_failures, web.login_window_s,
                           account_max=web.login_account_max_failures, global_budget=web.login_global_budget,
                           slow_s=web.login_slow_s)
    accounts = Accounts(hub.service.kb, gate=HashGate(web.login_concurrent_hashes))
    names = people_class_names(config)
    ctx = WebContext(hub, config, accounts, limiter, names)
    app.extensions["hgen_web"] = ctx  # the server closes what the routes keep (the export's temporary zip)
    _hooks(app, ctx)
    routes_auth.register(app, ctx)
    routes_annotate.register(app, ctx)
    routes_operator.register(app, ctx)
    routes_export.register(app, ctx)
    routes_device.register(app, ctx)
    return app


def _hooks(app: Flask, ctx: WebContext) -> None:
    @app.before_request
    def guard() -> Any:
        session.permanent = True
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            check_csrf(session, request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))
        return None

    @app.context_processor
    def inject() -> dict[str, Any]:
        account = g.get("account")
        return {"csrf_token": lambda: csrf_token(session), "user": account.annotator_id if account else None,
                "role": account.role if account else None}

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                                               "style-src 'self'; script-src 'self'")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.errorhandler(BadInputError)
    def refused(error: BadInputError) -> tuple[str, int, dict[str, str]]:
        ctx.hub.service.metrics.inc(error.code)
        status = next(code for kind, code in STATUS if isinstance(error, kind))
        extra = {"Retry-After": str(int(error.retry_after_s))} if isinstance(error, LoginRateLimitedError) else {}
        message = str(error)[:500]
        if isinstance(error, SessionExpiredError | LoginRateLimitedError | AuthError):
            return render_template("login.html", message=message), status, extra
        return render_template("error.html", message=message, status=status), status, extra
