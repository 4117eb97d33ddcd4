"""The operator's page: overview, retrain, gold tasks, invites, pausing annotators. Role from the knowledge base."""

from __future__ import annotations

import hmac
import math
import re
import time
from typing import Any

from flask import Flask, Response, abort, redirect, render_template, request, session, url_for

from hgen.hub.crowd.together import MIN_SHARED, answering_together
from hgen.hub.errors import AuthError, InvalidRequestError, SampleImageMissingError, TaskImageUnavailableError
from hgen.hub.gold import GOLD_PAUSE_REASON
from hgen.hub.gold_review import gold_standings, retire_gold
from hgen.hub.images import encoded_image
from hgen.hub.retrain.watch import watch
from hgen.hub.web import stats
from hgen.hub.web.answers import check_class
from hgen.hub.web.routes_annotate import image_response, url_key
from hgen.hub.web.auth import check_name
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.forms import (AnnotatorActionForm, GoldForm, InviteForm, RetireGoldForm, RetrainForm, RollbackForm,
                                parse_form)
from hgen.hub.web.storage import StorageGauge, human_bytes
from hgen.runtime.errors import HGenError

NOTICE = "notice"  # session key of the one message the operator page shows next
GOLD_SHOWN = 20  # gold tasks listed on the page, most disputed first (`hgen-hub list-gold` lists them all)


def register(app: Flask, ctx: WebContext) -> None:
    kb = ctx.hub.service.kb
    gauge = StorageGauge(kb, kb.images.image_dir, ctx.config.retrain.store_dir)  # measures at most once a minute

    @app.get("/operator")
    def operator() -> Any:
        require_user(ctx, "operator")
        hub = ctx.hub
        models = [m.name for m in ctx.config.retrain.models]
        versions = {m: hub.retrain_store.current_version(m) for m in models}
        watches = {m: watch(hub.retrain_store, m) for m in models}  # people's labels of confident answers
        storage = gauge.read()
        with kb.session() as s:
            gold_list = gold_standings(s, limit=GOLD_SHOWN)
        export_job = ctx.exports.current()
        return render_template(
            "operator.html", view=stats.overview(hub.service.kb, time.time(), ctx.class_names),
            together=answering_together(hub.service.kb), min_shared=MIN_SHARED,
            storage=storage, storage_age=max(0.0, gauge.clock() - storage.measured_at), size=human_bytes,
            models=models, versions=versions, watches=watches, runs=hub.retrain_store.runs(limit=30),
            retrain_on=hub.retrain is not None, gold_count=hub.service.gold.count(), gold=ctx.config.gold,
            gold_list=gold_list, class_names=ctx.class_names, gold_pause_reason=GOLD_PAUSE_REASON,
            export_job=export_job, export_age_s=ctx.exports.age(export_job) if export_job else 0.0,
            export_left_min=math.ceil(ctx.exports.seconds_left(export_job) / 60) if export_job else 0,
            counters=sorted(hub.service.metrics.snapshot().items()),
            classes=list(enumerate(ctx.class_names)), message=str(session.pop(NOTICE, "")),
            invite=session.pop("invite", ""))  # both shown once, never in a URL

    @app.get("/metrics")
    def metrics() -> Any:
        """This process's counters (received, refused by error code, devices refused, ...) for a Prometheus
        scraper that sends `web.metrics_token`; 404 when no token is configured: nobody reads them anonymously."""
        token = ctx.config.web.metrics_token
        if token is None:
            abort(404)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {token.get_secret_value()}".encode()):
            raise AuthError("GET /metrics needs `Authorization: Bearer <web.metrics_token>`")
        return Response(metrics_text(ctx.hub.service.metrics.snapshot()), mimetype="text/plain; version=0.0.4")

    @app.post("/operator/retrain")
    def retrain() -> Any:
        require_user(ctx, "operator")
        form = parse_form(RetrainForm, request.form)
        if ctx.hub.retrain is None:
            return back_to_operator("retraining is off (retrain.enabled: false)")
        try:
            run = ctx.hub.retrain.request(form.model, "operator", research=form.research == "1")
        except HGenError as exc:  # busy, unknown, a key or bundle that cannot be read: said, never a 500
            return back_to_operator(str(exc)[:300])
        return back_to_operator(f"retrain {run.id} of {run.model_name} queued{' with re-search' if run.research else ''}")

    @app.post("/operator/rollback")
    def rollback() -> Any:
        """Synchronous: re-signing stored bundles takes a moment; the devices are told through this hub. It needs
        no retrain worker: a hub that never retrains can still restore a version published by hand."""
        from hgen.hub.retrain.release import Releases

        require_user(ctx, "operator")
        form = parse_form(RollbackForm, request.form)
        try:
            run = Releases(ctx.hub.pipeline).rollback(form.model, form.to or None)
        except HGenError as exc:  # refused, busy, a store or bundle that cannot be read: said, never a 500
            return back_to_operator(str(exc)[:300])
        return back_to_operator(f"{run.model_name} rolled back: {run.from_version} -> {run.to_version} (the files of "
                     f"{run.metrics.get('restored')})")

    @app.post("/operator/gold")
    def add_gold() -> Any:
        require_user(ctx, "operator")
        form = parse_form(GoldForm, request.form)
        class_id = check_class(form.class_id, ctx.config.num_classes)
        upload = request.files.get("image")
        image = encoded_image(upload.read() if upload is not None else b"")
        sample_id = ctx.hub.service.gold.add(image, class_id, ctx.config.num_classes, ctx.config.limits)
        return back_to_operator(f"gold task {sample_id} added ({ctx.class_names[class_id]})")

    @app.get("/operator/gold/<sample_id>/image")
    def gold_image(sample_id: str) -> Any:
        require_user(ctx, "operator")
        try:
            image = ctx.hub.service.gold.image(url_key(sample_id, "sample id"))
        except SampleImageMissingError:
            raise TaskImageUnavailableError("this gold task's image cannot be read now") from None
        if image is None:
            raise InvalidRequestError("not a gold task")
        return image_response(image)

    @app.post("/operator/gold/retire")
    def retire() -> Any:
        """A wrong gold task out of the gold set; the people it paused, whom the rule would not pause now, resumed."""
        require_user(ctx, "operator")
        form = parse_form(RetireGoldForm, request.form)
        try:
            report = retire_gold(ctx.hub.service.gold, [form.sample_id])
        except InvalidRequestError as exc:
            return back_to_operator(str(exc))
        resumed = ", ".join(r.annotator_id for r in report.resumed)
        still = ", ".join(r.annotator_id for r in report.still_paused)
        return back_to_operator(f"gold task {form.sample_id} {'retired' if report.retired else 'was retired before'}"
                                + (f"; resumed {resumed}" if resumed else "")
                                + (f"; still paused by gold: {still}" if still else ""))

    @app.post("/operator/invite")
    def invite() -> Any:
        require_user(ctx, "operator")
        form = parse_form(InviteForm, request.form)
        name = check_name(form.name)
        try:
            token = ctx.accounts.invite(name, form.role, ctx.config.web.invite_ttl_s, replace=form.replace == "1")
        except InvalidRequestError as exc:
            return back_to_operator(str(exc)[:300])
        base = (ctx.config.web.public_url or ctx.hub.web_url).rstrip("/")
        session["invite"] = f"{base}{url_for('join')}#token={token}"  # the fragment never reaches a server
        return back_to_operator(f"invite for {name} created")

    @app.post("/operator/annotator")
    def pause_or_resume() -> Any:
        require_user(ctx, "operator")
        form = parse_form(AnnotatorActionForm, request.form)
        if form.action == "resume":
            ctx.hub.service.gold.resume(form.annotator)
        else:
            ctx.hub.service.gold.pause(form.annotator, "paused by an operator")
        return back_to_operator(f"{form.annotator}: {form.action}d")


def back_to_operator(message: str) -> Any:
    """To the operator page, which says `message` once. It travels in the signed session cookie, never in the URL:
    a `?message=` link let anyone make the page say what they chose, in the hub's own voice."""
    session[NOTICE] = message[:300]
    return redirect(url_for("operator"), 303)


def metrics_text(counts: dict[str, int]) -> str:
    """Prometheus exposition format 0.0.4: every hub counter as hgen_hub_<name>_total."""
    lines = []
    for name, value in sorted(counts.items()):
        metric = "hgen_hub_" + re.sub(r"[^a-zA-Z0-9_]", "_", name) + "_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    return "\n".join(lines) + "\n"
