"""A hub with the web UI on for tests: real HubApp, real werkzeug server on a free loopback port."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.testing.services import free_port
from hgen.hub.web.auth import Accounts

PASSWORD = "correct horse battery"


def web_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """Plain config data: SQLite in tmp_path, gRPC and web on free ports, a fresh random secret."""
    data: dict[str, Any] = {"devices": ["cam-1"], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                            "grpc": {"port": free_port()},
                            "web": {"enabled": True, "port": 0, "secret_key": secrets.token_urlsafe(32)}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@contextmanager
def web_hub(tmp_path: Path, **sections: Any) -> Iterator[HubApp]:
    app = HubApp(parse_hub_config(web_config(tmp_path, **sections))).start()
    try:
        yield app
    finally:
        app.stop()


def add_people(app: HubApp, annotators: tuple[str, ...] = ("ann",), operators: tuple[str, ...] = ("op",)) -> None:
    accounts = Accounts(app.service.kb)
    for name in annotators:
        accounts.create(name, "annotator", PASSWORD)
    for name in operators:
        accounts.create(name, "operator", PASSWORD)


def csrf_token_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def logged_in(app: HubApp, user: str, password: str = PASSWORD, **environ: str) -> Any:
    """A Flask test client logged in as `user` (`environ` sets e.g. REMOTE_ADDR); returns the FlaskClient."""
    client = app.web.app.test_client()
    response = client.post("/login", data={"username": user, "password": password,
                                           "csrf_token": csrf_token_of(client.get("/login").get_data(as_text=True))},
                           environ_base=environ)
    assert response.status_code == 303, response.get_data(as_text=True)
    return client
