"""Runs the web app on werkzeug's threaded WSGI server, bounded (`serving.py`: connection caps and a read timeout),
in a background thread of the hub process.

Port 0 picks a free port (see `.port` / `.url` after start). For people outside the machine, put a TLS proxy in
front and set `web.public_url` to its https:// address (cookies are then marked Secure).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from hgen.hub.config import WebConfig
from hgen.hub.web.app import create_web_app
from hgen.hub.web.serving import BoundedWSGIServer

log = logging.getLogger(__name__)
SECRET_IN_URL = re.compile(r"((?:token|password|csrf_token)=)[^&\s\"]+")
SECRET_IN_PATH = re.compile(r"(/device/+join/+)[^/?#\s\"]+")  # the one route with a secret in its path


class RedactSecrets(logging.Filter):
    """Access-log lines never carry a secret: not an old-style `/join?token=...` link, not a phone's
    `/device/join/<token>` (the token is its device credential, once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = SECRET_IN_PATH.sub(r"\1[redacted]", SECRET_IN_URL.sub(r"\1[redacted]", message))
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


class WebServer:
    def __init__(self, hub: Any, config: WebConfig) -> None:
        self.config = config
        self.app = create_web_app(hub)
        self.on_refused = lambda: hub.service.metrics.inc("web_connections_refused")
        self._server: BoundedWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        access_log = logging.getLogger("werkzeug")
        if not any(isinstance(f, RedactSecrets) for f in access_log.filters):
            access_log.addFilter(RedactSecrets())
        self._server = BoundedWSGIServer(
            self.config.host, self.config.port, self.app, max_connections=self.config.max_connections,
            per_address=self.config.max_connections_per_address, read_timeout_s=self.config.read_timeout_s,
            trusted=self.config.trusted_proxies, on_refused=lambda _: self.on_refused())
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-web", daemon=True)
        self._thread.start()
        log.info("web UI on %s", self.url)
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.app.extensions["hgen_web"].exports.close()
