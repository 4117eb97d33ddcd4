"""The web server's connection caps and read timeout (hub/web/serving.py), on a real hub's real web port: idle
connections from anyone who could reach it used to take a thread and a file each for as long as they liked (about
1,000 exhausted the hub's open files, gRPC included). Clients from other loopback addresses (127.0.0.2, .3) stand in
for other machines."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hgen.hub.app import HubApp
from hgen.hub.testing.services import wait_until
from hgen.hub.testing.web import web_hub

CAPS = {"max_connections": 6, "max_connections_per_address": 4}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    """Idle connections stay open past any test's pace (a loaded machine took over a second to open six)."""
    with web_hub(tmp_path, web={**CAPS, "read_timeout_s": 600.0}) as app:
        yield app


@pytest.fixture
def impatient_hub(tmp_path: Path) -> Iterator[HubApp]:
    with web_hub(tmp_path, web={**CAPS, "read_timeout_s": 1.0}) as app:
        yield app


def idle(app: HubApp, source: str) -> socket.socket:
    """A connection from `source` that starts a request and never finishes it."""
    conn = socket.create_connection(("127.0.0.1", app.web.port), timeout=30, source_address=(source, 0))
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
    return conn


def healthz(app: HubApp, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", app.web.port), timeout=30, source_address=(source, 0)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        return b"".join(iter(lambda: conn.recv(4096), b""))


def test_connections_past_the_caps_get_503_and_others_are_still_served(hub: HubApp) -> None:
    held = [idle(hub, "127.0.0.2") for _ in range(4)]
    try:
        assert wait_until(lambda: hub.web._server.open_connections() == 4)
        assert healthz(hub, "127.0.0.2").startswith(b"HTTP/1.1 503")  # that address is at its cap
        assert b'"ok"' in healthz(hub, "127.0.0.3")  # another address is served
        # that request's connection counts until the server has closed its side: wait, or it takes a slot below
        assert wait_until(lambda: hub.web._server.open_connections() == 4)
        held += [idle(hub, "127.0.0.3") for _ in range(2)]
        assert wait_until(lambda: hub.web._server.open_connections() == 6)
        assert healthz(hub, "127.0.0.4").startswith(b"HTTP/1.1 503")  # the total cap
        assert hub.service.metrics.get("web_connections_refused") == 2
    finally:
        for conn in held:
            conn.close()
    assert wait_until(lambda: hub.web._server.open_connections() == 0)
    assert b'"ok"' in healthz(hub, "127.0.0.2")


def test_a_connection_that_stops_sending_is_closed_after_the_read_timeout(impatient_hub: HubApp) -> None:
    hub = impatient_hub
    conn = idle(hub, "127.0.0.2")
    try:
        assert conn.recv(4096) == b""  # the server closed it (read_timeout_s 1 s; the client waits up to 30 s)
    finally:
        conn.close()
    assert wait_until(lambda: hub.web._server.open_connections() == 0)
    assert urllib.request.urlopen(f"http://127.0.0.1:{hub.web.port}/healthz", timeout=30).status == 200

