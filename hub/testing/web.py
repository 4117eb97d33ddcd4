"""A hub with the web UI on for tests: real HubApp, real werkzeug server on a free loopback port."""

from __future__ import annotations

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
