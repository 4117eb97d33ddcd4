"""The hub's side of phones (hub/web/routes_device.py, hub/web/phones.py) without a browser: only operators make
phone links, a link provisions once, bundles need the device's own bearer token, the device page carries its own
CSP (wasm) while the rest keeps the strict one, and bad names or paths are refused while the hub keeps serving."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from hgen.edge_agent.testing import make_keys
from hgen.hub.app import HubApp
from hgen.hub.kb.store import BundleRecord
from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub
from hgen.runtime import signing


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    keys = make_keys(tmp_path / "keys")
    archive = tmp_path / "phone.hgb"
    archive.write_bytes(b"signed bundle bytes the phone verifies itself")
    with web_hub(tmp_path, phones={"public_key": str(keys.public_pem), "mqtt_websocket_url": "wss://hub.example:9001",
                                   "invite_ttl_s": 60}) as app:
        add_people(app)
        app.service.kb.add_bundle(BundleRecord("phone-model", "1.0.0", "", archive.stat().st_size, b"", str(archive),
                                               1.0))
        yield app


def make_link(app: HubApp, device_id: str = "phone-1", user: str = "op") -> tuple[int, str]:
    client = logged_in(app, user)
    token = csrf_token_of(client.get("/annotate").get_data(as_text=True))
    page = client.post("/operator/phones", data={"device_id": device_id, "bundle_name": "phone-model",
                                                 "csrf_token": token})
    found = re.search(r'/device/join/([A-Za-z0-9_-]+)"', page.get_data(as_text=True))
    return page.status_code, found.group(1) if found else ""


def provisioning(page: str) -> dict[str, object]:
    found = re.search(r'data-json="([^"]+)"', page)
    assert found is not None
    return json.loads(unescape(found.group(1)))


def test_a_phone_link_provisions_once_with_the_pinned_key(hub: HubApp, tmp_path: Path) -> None:
    status, token = make_link(hub)
    assert status == 200 and token
    client = hub.web.app.test_client()
    first = client.get(f"/device/join/{token}")
    assert first.status_code == 200
    given = provisioning(first.get_data(as_text=True))
    pinned = signing.raw_public_bytes(signing.load_public_key(tmp_path / "keys" / "signing.pub"))
    assert given["device_id"] == "phone-1" and given["bundle_name"] == "phone-model"
    assert base64.b64decode(str(given["public_key"])) == pinned and given["mqtt_url"] == "wss://hub.example:9001"
    again = client.get(f"/device/join/{token}")
    assert again.status_code == 400 and "data-json" not in again.get_data(as_text=True)
    bundle = client.get("/device/bundle/phone-model", headers={"Authorization": f"Bearer phone-1:{given['secret']}"})
    assert bundle.status_code == 200 and bundle.headers["X-Bundle-Version"] == "1.0.0"
    assert bundle.data == b"signed bundle bytes the phone verifies itself"


def test_only_operators_make_links_and_device_ids_are_checked(hub: HubApp) -> None:
    assert make_link(hub, user="ann")[0] == 403
    assert make_link(hub, device_id="../etc")[0] == 400
    assert make_link(hub, device_id="hgen-hub")[0] == 400  # the hub's own broker account
    assert make_link(hub, "phone-2")[0] == 200
    assert make_link(hub, "phone-2")[0] == 400  # already enrolled: rotate or revoke first


def test_bundles_need_the_devices_token(hub: HubApp) -> None:
    client = hub.web.app.test_client()
    assert client.get("/device/bundle/phone-model").status_code == 401
    assert client.get("/device/bundle/phone-model", headers={"Authorization": "Bearer phone-1:guess"}).status_code == 401
    _, token = make_link(hub, "phone-3")
    secret = provisioning(client.get(f"/device/join/{token}").get_data(as_text=True))["secret"]
    auth = {"Authorization": f"Bearer phone-3:{secret}"}
    assert client.get("/device/bundle/nothing-here", headers=auth).status_code == 404
    assert client.get("/device/bundle/phone-model/9.9.9", headers=auth).status_code == 404
    assert client.get("/device/bundle/phone-model", headers=auth).status_code == 200


def test_device_page_policy_and_static_files(hub: HubApp) -> None:
    client = hub.web.app.test_client()
    page = client.get("/device")
    csp = page.headers["Content-Security-Policy"]
    assert "'wasm-unsafe-eval'" in csp and "wss://hub.example:9001" in csp and "unsafe-inline" not in csp
    assert "wasm-unsafe-eval" not in client.get("/login").headers["Content-Security-Policy"]
    for bad in ("../app.py", "%2e%2e%2fapp.py", "device.py", ".hidden.js"):
        assert client.get(f"/device/static/{bad}").status_code == 404
    manifest = client.get("/device/manifest.webmanifest")
    assert manifest.status_code == 200 and json.loads(manifest.data)["start_url"] == "/device"
