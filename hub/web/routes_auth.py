"""Login, invites and logout. Logout ends every session of the account (the epoch moves on), not just this
cookie; invite tokens travel in the link's fragment, which browsers never send, so they reach no access log."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, redirect, render_template, request, session, url_for

from hgen.hub.errors import SessionExpiredError
from hgen.hub.web.auth import LoginBusyError, user_name
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.forms import JoinForm, LoginForm, parse_form
from hgen.hub.web.security import current_user, log_in


def register(app: Flask, ctx: WebContext) -> None:
    @app.get("/")
    def index() -> Any:
        if not session.get("user"):
            return redirect(url_for("login"))
        account = require_user(ctx)
        return redirect(url_for("operator" if account.role == "operator" else "annotate"))

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "GET":
            return render_template("login.html")  # no `?message=`: a link must not put words in the hub's mouth
        form = parse_form(LoginForm, request.form)
        address, username = ctx.address(), user_name(form.username)  # one name, however its accents were typed
        ctx.limiter.begin(username, address)  # counted as a failure unless the password is right
        try:
            account = ctx.accounts.authenticate(username, form.password, address)
        except LoginBusyError:  # no password was checked: not a failure (429, counted as web_login_busy)
            ctx.limiter.withdraw(username, address)
            raise
        ctx.limiter.succeeded(username, address)
        log_in(session, account.annotator_id, account.epoch)
        return redirect(url_for("index"), 303)

    @app.route("/join", methods=["GET", "POST"])
    def join() -> Any:
        if request.method == "GET":  # the link carries the token after '#': join.js copies it into the form
            return render_template("join.html", token=request.args.get("token", "")[:256])
        form = parse_form(JoinForm, request.form)
        account = ctx.accounts.accept_invite(form.token, form.password)
        log_in(session, account.annotator_id, account.epoch)
        return redirect(url_for("index"), 303)

    @app.post("/logout")
    def logout() -> Any:
        try:
            found = current_user(session, ctx.config.web.session_max_age_s)
        except SessionExpiredError:
            found = None  # already over: nothing more to end
        if found is not None:
            account = ctx.accounts.get(found[0])
            if account is not None and account.epoch == found[1]:
                ctx.accounts.end_sessions(account.annotator_id)  # every copy of every cookie of this account
        session.clear()
        g.pop("account", None)
        return redirect(url_for("login"), 303)
