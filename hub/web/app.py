"""The Flask application: login / invites, the annotator view, the operator view; errors become clear pages.

`create_web_app(hub)` builds it around a running `HubApp`; nothing is global: routes close over one `WebContext`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from flask import Flask, Response, abort, redirect, render_template, request, session, url_for

from hgen.hub.config import HubConfig
from hgen.hub.errors import (
    AuthError,
    BadInputError,
    CsrfError,
    LoginRateLimitedError,
    NotAnImageError,
    RetrainBusyError,
    RetrainError,
    SessionExpiredError,
    TaskClosedError,
    UnknownModelError,
    UnknownTaskError,
)
from hgen.hub.web import answers, stats
from hgen.hub.web.auth import Accounts, LoginLimiter, check_name
from hgen.hub.web.security import CSRF_FIELD, CSRF_HEADER, check_csrf, csrf_token, current_user, log_in
from hgen.protos import hub_pb2

HERE = Path(__file__).parent
STATUS = ((LoginRateLimitedError, 429), (SessionExpiredError, 401), (AuthError, 401), (CsrfError, 403),
          (UnknownTaskError, 403), (TaskClosedError, 409), (NotAnImageError, 415), (BadInputError, 400))
KIND_VIEW = {hub_pb2.HDNN_KIND_YOLO: "boxes", hub_pb2.HDNN_KIND_FASTER_RCNN: "regions"}
MAX_UPLOAD = 8 * 1024 * 1024


@dataclass
class WebContext:
    """What the routes need from the hub: one object, passed explicitly."""

    hub: Any  # HubApp (typed loosely: the app module imports this one)
    config: HubConfig
    accounts: Accounts
    limiter: LoginLimiter
    class_names: tuple[str, ...]

    @property
    def api(self):  # type: ignore[no-untyped-def]
        return self.hub.service.annotators


def create_web_app(hub: Any) -> Flask:
    config: HubConfig = hub.config
    web = config.web
    if web.secret_key is None:
        raise ValueError("web.secret_key is required (no default secret)")
    app = Flask(__name__, template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config.update(SECRET_KEY=web.secret_key.get_secret_value(), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=web.secure_cookies,
                      SESSION_COOKIE_NAME="hgen_session", MAX_CONTENT_LENGTH=MAX_UPLOAD,
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=web.session_max_age_s))
    names = web.class_names or tuple(str(i) for i in range(config.num_classes))
    ctx = WebContext(hub, config, Accounts(hub.service.kb),
                     LoginLimiter(hub.service.kb, web.login_max_failures, web.login_window_s), names)
    _hooks(app, ctx)
    _auth_routes(app, ctx)
    _annotator_routes(app, ctx)
    _operator_routes(app, ctx)
    return app


# --- cross-cutting: CSRF, session age, error pages ------------------------------------------------------------


def _hooks(app: Flask, ctx: WebContext) -> None:
    @app.before_request
    def guard() -> Any:
        session.permanent = True
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            check_csrf(session, request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))
        return None

    @app.context_processor
    def inject() -> dict[str, Any]:
        return {"csrf_token": lambda: csrf_token(session), "user": session.get("user"), "role": session.get("role")}

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self'; script-src 'self'")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(BadInputError)
    def refused(error: BadInputError) -> tuple[str, int, dict[str, str]]:
        ctx.hub.service.metrics.inc(error.code)
        status = next(code for kind, code in STATUS if isinstance(error, kind))
        extra = {"Retry-After": str(int(error.retry_after_s))} if isinstance(error, LoginRateLimitedError) else {}
        if isinstance(error, SessionExpiredError | LoginRateLimitedError | AuthError):
            return render_template("login.html", message=str(error)), status, extra
        return render_template("error.html", message=str(error), status=status), status, extra


def _user(ctx: WebContext, role: str | None = None) -> str:
    found = current_user(session, ctx.config.web.session_max_age_s)
    if found is None:
        abort(redirect(url_for("login")))
    if ctx.accounts.get(found[0]) is None:
        session.clear()
        raise SessionExpiredError("your account no longer exists; log in again")
    if role is not None and found[1] != role:
        abort(403)
    return found[0]


# --- login, invites, logout -----------------------------------------------------------------------------------


def _auth_routes(app: Flask, ctx: WebContext) -> None:
    @app.get("/")
    def index() -> Any:
        if not session.get("user"):
            return redirect(url_for("login"))
        return redirect(url_for("operator" if session.get("role") == "operator" else "annotate"))

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "GET":
            return render_template("login.html", message=request.args.get("message", ""))
        name, password = request.form.get("username", ""), request.form.get("password", "")
        address = request.remote_addr or "?"
        ctx.limiter.begin(name, address)  # counted as a failure unless the password is right
        account = ctx.accounts.authenticate(name, password)
        ctx.limiter.succeeded(name, address)
        log_in(session, account.annotator_id, account.role)
        return redirect(url_for("index"), 303)

    @app.route("/join", methods=["GET", "POST"])
    def join() -> Any:
        if request.method == "GET":
            return render_template("join.html", token=request.args.get("token", ""))
        account = ctx.accounts.accept_invite(request.form.get("token", ""), request.form.get("password", ""))
        log_in(session, account.annotator_id, account.role)
        return redirect(url_for("index"), 303)

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"), 303)


# --- annotators -----------------------------------------------------------------------------------------------


def _current_task(ctx: WebContext, user: str) -> tuple[Any, float] | None:
    """Keep showing the task already given (a reload must not take a second slot), else take the next."""
    held = session.get("task_id")
    if held:
        found = ctx.hub.service.kb.open_task(held, user)
        if found is not None:
            return found
    task = ctx.api.next_task(user)
    if task is None:
        session.pop("task_id", None)
        return None
    session["task_id"] = task.task_id
    return task, time.time()


def _annotator_routes(app: Flask, ctx: WebContext) -> None:
    @app.get("/annotate")
    def annotate() -> Any:
        user = _user(ctx)
        paused = ctx.api.paused_reason(user)
        if paused is not None:
            return render_template("annotate.html", paused=paused, task=None)
        found = _current_task(ctx, user)
        if found is None:
            return render_template("annotate.html", paused=None, task=None)
        task = found[0]
        probs = list(task.model_output.class_probabilities)
        top = sorted(range(len(probs)), key=lambda i: -probs[i])[:3]
        guesses = [(ctx.class_names[i] if i < len(ctx.class_names) else str(i), probs[i]) for i in top]
        return render_template("annotate.html", paused=None, task=task, view=KIND_VIEW.get(task.hdnn_kind, "class"),
                               classes=list(enumerate(ctx.class_names)), guesses=guesses,
                               message=request.args.get("message", ""))

    @app.get("/task/<task_id>/image")
    def task_image(task_id: str) -> Any:
        user = _user(ctx)
        found = ctx.hub.service.kb.open_task(task_id, user)
        if found is None:
            raise UnknownTaskError("this task is not yours, or it is already closed")
        return _image_response(found[0].image)

    @app.post("/task/<task_id>/answer")
    def answer(task_id: str) -> Any:
        user = _user(ctx)
        found = ctx.hub.service.kb.open_task(task_id, user)
        if found is None:
            raise UnknownTaskError("this task is not yours, or it is already closed; nothing was changed")
        task, assigned_at = found
        parsed = answers.parse(request.form, task, user, ctx.config.num_classes, time.time() - assigned_at)
        if isinstance(parsed, answers.Release):
            ctx.api.release(task_id, user, parsed.kind, parsed.latency_s)
        else:
            ctx.api.submit_answer(parsed)
        session.pop("task_id", None)
        return redirect(url_for("annotate"), 303)


def _image_response(image: hub_pb2.Image) -> Response:
    if image.format == hub_pb2.IMAGE_FORMAT_JPEG:
        return Response(image.data, mimetype="image/jpeg")
    if image.format == hub_pb2.IMAGE_FORMAT_PNG:
        return Response(image.data, mimetype="image/png")
    pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, image.channels or 1)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        abort(500)
    return Response(png.tobytes(), mimetype="image/png")


# --- operators ------------------------------------------------------------------------------------------------


def _operator_routes(app: Flask, ctx: WebContext) -> None:
    @app.get("/operator")
    def operator() -> Any:
        _user(ctx, "operator")
        hub = ctx.hub
        models = [m.name for m in ctx.config.retrain.models]
        versions = {m: hub.retrain_store.current_version(m) for m in models}
        return render_template(
            "operator.html", view=stats.overview(hub.service.kb, hub.service.gold, time.time(), ctx.class_names),
            models=models, versions=versions, runs=hub.retrain_store.runs(limit=30),
            retrain_on=hub.retrain is not None, gold_count=hub.service.gold.count(), gold=ctx.config.gold,
            classes=list(enumerate(ctx.class_names)), message=request.args.get("message", ""),
            invite=request.args.get("invite", ""))

    @app.post("/operator/retrain")
    def retrain() -> Any:
        _user(ctx, "operator")
        if ctx.hub.retrain is None:
            return _back("retraining is off (retrain.enabled: false)")
        try:
            run = ctx.hub.retrain.request(request.form.get("model", ""), "operator",
                                          research=request.form.get("research") == "1")
        except (RetrainBusyError, UnknownModelError, RetrainError) as exc:
            return _back(str(exc))
        return _back(f"retrain {run.id} of {run.model_name} queued{' with re-search' if run.research else ''}")

    @app.post("/operator/gold")
    def add_gold() -> Any:
        _user(ctx, "operator")
        upload = request.files.get("image")
        image = _uploaded_image(upload.read() if upload is not None else b"")
        class_id = answers._class(request.form.get("class_id", ""), ctx.config.num_classes)  # noqa: SLF001
        sample_id = ctx.hub.service.gold.add(image, class_id, ctx.config.num_classes, ctx.config.limits)
        return _back(f"gold task {sample_id} added ({ctx.class_names[class_id]})")

    @app.post("/operator/invite")
    def invite() -> Any:
        _user(ctx, "operator")
        name = check_name(request.form.get("name", ""))
        role = request.form.get("role", "annotator")
        token = ctx.accounts.invite(name, role, ctx.config.web.invite_ttl_s)
        link = url_for("join", token=token, _external=True)
        return redirect(url_for("operator", message=f"invite for {name} created", invite=link), 303)

    @app.post("/operator/annotator")
    def pause_or_resume() -> Any:
        _user(ctx, "operator")
        who, action = request.form.get("annotator", ""), request.form.get("action", "")
        if action == "resume":
            ctx.hub.service.gold.resume(who)
        elif action == "pause":
            ctx.hub.service.gold.pause(who, "paused by an operator")
        else:
            abort(400)
        return _back(f"{who}: {action}d")


def _back(message: str) -> Any:
    return redirect(url_for("operator", message=message), 303)


def _uploaded_image(data: bytes) -> hub_pb2.Image:
    """PNG or JPEG by content (never by file name); anything else is refused with a clear message."""
    formats = {b"\x89PNG\r\n\x1a\n": hub_pb2.IMAGE_FORMAT_PNG, b"\xff\xd8\xff": hub_pb2.IMAGE_FORMAT_JPEG}
    fmt = next((f for magic, f in formats.items() if data.startswith(magic)), None)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if fmt and data else None
    if decoded is None:
        raise NotAnImageError("the upload is not an image: upload a PNG or JPEG file")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    return hub_pb2.Image(format=fmt, data=data, height=decoded.shape[0], width=decoded.shape[1], channels=channels)
