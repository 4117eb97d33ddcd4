"""Device mode for phones (android_bridge/): the /device page, its built script and wasm, bundles for phones
(device bearer token), the operator's onboarding link and the phone's side of it (GET shows it, POST claims it).

The page runs wasm (onnxruntime-web), so its responses carry their own Content-Security-Policy with
'wasm-unsafe-eval' and the broker's WebSocket in connect-src; every other page keeps the app's strict policy.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

import grpc
from flask import Flask, Response, abort, make_response, render_template, request, send_file, url_for

from hgen.hub.broker_acl import device_registry
from hgen.hub.bundle_files import open_archive
from hgen.hub.devices import DeviceCredentialError, check_device_id
from hgen.hub.errors import AuthError, BadInputError, BundleMissingError, HubConfigError
from hgen.hub.transports.grpc_auth import CallerCheck
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.phones import PhoneAppMissingError, PhoneInvites, device_app

log = logging.getLogger(__name__)
STATIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(js|mjs|wasm|json|png|svg)$")
TYPES = {"js": "text/javascript", "mjs": "text/javascript", "wasm": "application/wasm", "json": "application/json",
         "png": "image/png", "svg": "image/svg+xml"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def device_csp(mqtt_url: str | None) -> str:
    origin = ""
    if mqtt_url:
        parts = urlsplit(mqtt_url)
        origin = f" {parts.scheme}://{parts.netloc}"
    return ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
            f"media-src 'self' blob: mediastream:; connect-src 'self'{origin}; worker-src 'self'; "
            "manifest-src 'self'")


class HttpRefusal:
    """The `context` CallerCheck refuses through, for HTTP: one target rule for FetchBundle and this download
    (CallerCheck.check_target has counted `device_wrong_target` and logged it; the phone gets 403 and why)."""

    def abort(self, _code: grpc.StatusCode, details: str) -> NoReturn:
        abort(make_response(render_template("error.html", message=details, status=403), 403))


def register(app: Flask, ctx: WebContext) -> None:
    registry = device_registry(ctx.config, ctx.hub.service.kb)
    callers = CallerCheck(ctx.hub.service, registry)
    invites = PhoneInvites(ctx.config, ctx.hub.service.kb, registry.add)
    csp = device_csp(ctx.config.phones.mqtt_websocket_url)

    def page(template: str, **values: Any) -> Response:
        response = make_response(render_template(template, **values))
        response.headers["Content-Security-Policy"] = csp
        return response

    def built() -> Any:
        """The page's build, or a 503 naming the build command (checked before a link is spent on a dead page)."""
        try:
            return device_app()
        except PhoneAppMissingError as exc:
            abort(make_response(render_template("error.html", message=str(exc), status=503), 503))

    @app.get("/device")
    def device() -> Any:
        built()
        return page("device.html", provisioning=None)

    @app.get("/device/join/<token>")
    def device_join(token: str) -> Any:
        """The single-use link, opened: a page whose button claims it. A GET never spends it, so a chat app's link
        preview (which fetches the URL) leaves it for the person; a used or expired link says so at once."""
        built()
        token = token[:100]
        return page("device_join.html", device_id=invites.pending(token), token=token)

    @app.post("/device/join/<token>")
    def device_claim(token: str) -> Any:
        """The button (CSRF-checked like every POST): hands the phone its provisioning once; the page stores it and
        opens device mode."""
        built()
        provisioning = invites.redeem(token[:100])
        return page("device.html", provisioning=json.dumps(provisioning.to_json()))

    @app.get("/device/static/<name>")
    def device_static(name: str) -> Any:
        folder = built()
        if not STATIC.match(name) or not (folder / name).is_file():
            abort(404)
        response = send_file(folder / name, mimetype=TYPES[name.rsplit(".", 1)[1]], max_age=0)
        if name == "sw.js":
            response.headers["Service-Worker-Allowed"] = "/device"
        response.headers["Content-Security-Policy"] = csp
        return response

    @app.get("/device/sw.js")
    def service_worker() -> Any:
        """Served from /device/ so its scope is device mode (it caches the wasm and the verified bundle)."""
        return device_static("sw.js")

    @app.get("/device/manifest.webmanifest")
    def web_manifest() -> Any:
        body = {"name": "hgen device", "short_name": "hgen", "start_url": url_for("device"), "scope": "/device",
                "display": "fullscreen", "orientation": "any", "background_color": "#000000", "theme_color": "#000000",
                "icons": [{"src": url_for("device_static", name="icon.svg"), "sizes": "any", "type": "image/svg+xml"}]}
        return Response(json.dumps(body), mimetype="application/manifest+json")

    @app.get("/device/bundle/<name>")
    @app.get("/device/bundle/<name>/<version>")
    def device_bundle(name: str, version: str = "") -> Any:
        """The signed archive the phone verifies itself (the same file gRPC's FetchBundle streams, under the same
        rule: a device enrolled for a target gets only bundles built for it)."""
        header = request.headers.get("Authorization", "")
        device_id = registry.authenticate(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if device_id is None:
            raise AuthError("a device bearer token is required")
        if not NAME.match(name) or (version and not NAME.match(version)):
            raise BadInputError("bad bundle name or version")
        record = ctx.hub.service.kb.bundle(name, version)
        if record is None:
            abort(404)
        callers.check_target(device_id, record, cast(grpc.ServicerContext, HttpRefusal()))
        try:
            archive = open_archive(ctx.hub.service.kb, record)
        except BundleMissingError as exc:
            log.error("bundle download by %s: %s", device_id, exc)
            abort(404)
        # The archive's SHA-256 is its ETag: the phone's service worker asks If-None-Match with the copy it keeps,
        # and a 304 spares it the whole bundle at every opening of the page.
        response = send_file(archive, mimetype="application/octet-stream", max_age=0, etag=record.sha256 or False,
                             conditional=True, download_name=f"{record.name}-{record.version}.hgb")
        if response.status_code == 200:
            response.content_length = record.size  # a file object is not sized by werkzeug
        response.headers["X-Bundle-Version"] = record.version
        return response

    @app.post("/operator/phones")
    def add_phone() -> Any:
        require_user(ctx, "operator")
        device_id = request.form.get("device_id", "").strip()[:128]
        bundle_name = request.form.get("bundle_name", "").strip()[:128]
        if not NAME.match(bundle_name):
            raise BadInputError("bundle name: letters, digits, '.', '_' or '-'")
        try:
            token = invites.create(check_device_id(device_id), bundle_name)
        except (DeviceCredentialError, HubConfigError) as exc:
            raise BadInputError(str(exc)) from None
        base = (ctx.config.web.public_url or request.host_url).rstrip("/")
        return render_template("phone_link.html", link=f"{base}/device/join/{token}", device_id=device_id,
                               bundle_name=bundle_name, warnings=phone_warnings(ctx, bundle_name))


def phone_warnings(ctx: WebContext, bundle_name: str) -> list[str]:
    """What will stop the phone, said to the operator while the link is still unused (the phone found out only
    after using it: "bundle download failed: HTTP 404"). Not refusals: the bundle may be published after the link."""
    found = []
    if ctx.hub.service.kb.bundle(bundle_name) is None:
        found.append(f"no bundle named {bundle_name!r} is published on this hub yet; the phone cannot start until "
                     "one is (a retrain or `hgen-hub publish` of that model)")
    if ctx.config.phones.mqtt_websocket_url is None:
        found.append("phones.mqtt_websocket_url is not set, so the phone has no way to reach people (the broker's "
                     "WebSocket listener)")
    return found
