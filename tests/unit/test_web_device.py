"""The hub's side of phones (hub/web/routes_device.py, hub/web/phones.py) without a browser: only operators make
phone links, a link provisions once (opening it only shows a button: its POST claims it, so a link preview
cannot use it up), bundles need the device's own bearer token, the device page carries its own
CSP (wasm) while the rest keeps the strict one, and bad names or paths are refused while the hub keeps serving.
Links live in the knowledge base (migration 0008): one hub process redeems another's link, once; it survives a
restart; it expires; and the database alone holds neither the token nor the device's secret in clear (SQLite: two
HubApps on one file; PostgreSQL too)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hgen.edge_agent.testing import make_keys
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.devices import DeviceCredentials, verify_secret
from hgen.hub.kb.models import DeviceCredential, PhoneInvite
from hgen.hub.kb.store import BundleRecord, KnowledgeBase
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_server, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub
from hgen.hub.web.phones import InviteUsedError, PhoneInvites
from hgen.runtime import signing
from sqlalchemy import select


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubApp]:
    keys = make_keys(tmp_path / "keys")
    archive = tmp_path / "phone.hgb"
    archive.write_bytes(b"signed bundle bytes the phone verifies itself")
    with web_hub(tmp_path, phones={"public_key": str(keys.public_pem), "mqtt_websocket_url": "wss://hub.example:9001",
                                   "invite_ttl_s": 60}) as app:
        add_people(app)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        app.service.kb.add_bundle(BundleRecord("phone-model", "1.0.0", digest, archive.stat().st_size, b"",
                                               str(archive), 1.0))
        yield app


def make_link(app: HubApp, device_id: str = "phone-1", user: str = "op") -> tuple[int, str]:
    status, token, _ = link_page(app, device_id, user)
    return status, token


def link_page(app: HubApp, device_id: str, user: str = "op", bundle: str = "phone-model") -> tuple[int, str, str]:
    client = logged_in(app, user)
    token = csrf_token_of(client.get("/annotate").get_data(as_text=True))
    page = client.post("/operator/phones", data={"device_id": device_id, "bundle_name": bundle,
                                                 "csrf_token": token})
    text = page.get_data(as_text=True)
    found = re.search(r'/device/join/([A-Za-z0-9_-]+)"', text)
    return page.status_code, found.group(1) if found else "", text


def claim(client: FlaskClient, token: str) -> Any:
    """What the person does: open the link (a page with a button), then press it (a POST with the page's CSRF
    token); returns the POST's response."""
    opened = client.get(f"/device/join/{token}")
    assert opened.status_code == 200, opened.get_data(as_text=True)[-300:]
    return client.post(f"/device/join/{token}", data={"csrf_token": csrf_token_of(opened.get_data(as_text=True))})


def provisioning(page: str) -> dict[str, object]:
    found = re.search(r'data-json="([^"]+)"', page)
    assert found is not None
    return json.loads(unescape(found.group(1)))


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
def test_a_phone_link_provisions_once_with_the_pinned_key(hub: HubApp, tmp_path: Path) -> None:
    status, token = make_link(hub)
    assert status == 200 and token
    client = hub.web.app.test_client()
    first = claim(client, token)
    assert first.status_code == 200
    given = provisioning(first.get_data(as_text=True))
    pinned = signing.raw_public_bytes(signing.load_public_key(tmp_path / "keys" / "signing.pub"))
    assert given["device_id"] == "phone-1" and given["bundle_name"] == "phone-model"
    assert base64.b64decode(str(given["public_key"])) == pinned and given["mqtt_url"] == "wss://hub.example:9001"
    assert given["audit_share"] == 0.02 and given["audit_seed"] == 0  # the agent's defaults (gate.audit_share, seed)
    assert given["max_payload_bytes"] == hub.config.mqtt.max_payload_bytes  # the phone shrinks larger samples
    again = client.get(f"/device/join/{token}")
    assert again.status_code == 400 and "data-json" not in again.get_data(as_text=True)
    session_token = csrf_token_of(client.get("/login").get_data(as_text=True))  # the phone's session's token
    claimed_again = client.post(f"/device/join/{token}", data={"csrf_token": session_token})
    assert claimed_again.status_code == 400 and "data-json" not in claimed_again.get_data(as_text=True)
    bundle = client.get("/device/bundle/phone-model", headers={"Authorization": f"Bearer phone-1:{given['secret']}"})
    assert bundle.status_code == 200 and bundle.headers["X-Bundle-Version"] == "1.0.0"
    assert bundle.data == b"signed bundle bytes the phone verifies itself"
    auth = {"Authorization": f"Bearer phone-1:{given['secret']}"}
    kept = client.get("/device/bundle/phone-model", headers={**auth, "If-None-Match": bundle.headers["ETag"]})
    assert kept.status_code == 304 and kept.data == b""  # the phone's cached copy is current: not sent again
    assert client.get("/device/bundle/phone-model", headers={"If-None-Match": bundle.headers["ETag"]}).status_code == 401


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
def test_opening_a_phone_link_never_spends_it(hub: HubApp) -> None:
    """A chat app's link preview fetches the URL before the person opens it: that GET (or HEAD) used to hand out the
    provisioning and spend the link. Now it shows a button; only the button's POST, with the page's CSRF token,
    claims it."""
    _, token = make_link(hub, "phone-p")
    for _ in range(3):  # previews and crawlers: fresh clients, no cookie
        preview = hub.web.app.test_client().get(f"/device/join/{token}")
        text = preview.get_data(as_text=True)
        assert preview.status_code == 200 and "data-json" not in text and "secret" not in text
        assert 'id="join-device">phone-p<' in text and 'method="post"' in text
        assert "'wasm-unsafe-eval'" in preview.headers["Content-Security-Policy"]
        assert hub.web.app.test_client().head(f"/device/join/{token}").status_code == 200
    with hub.service.kb.session() as s:
        row = s.scalars(select(PhoneInvite)).one()
        assert row.sealed is not None and row.redeemed_at is None  # still unspent
    forged = hub.web.app.test_client().post(f"/device/join/{token}", data={"csrf_token": "forged"})
    assert forged.status_code == 403 and "data-json" not in forged.get_data(as_text=True)  # CSRF as every POST
    person = hub.web.app.test_client()
    given = provisioning(claim(person, token).get_data(as_text=True))
    assert given["device_id"] == "phone-p" and given["secret"]
    assert hub.web.app.test_client().get(f"/device/join/{token}").status_code == 400  # now it is used


def test_only_operators_make_links_and_device_ids_are_checked(hub: HubApp) -> None:
    assert make_link(hub, user="ann")[0] == 403
    assert make_link(hub, device_id="../etc")[0] == 400
    assert make_link(hub, device_id="hgen-hub")[0] == 400  # the hub's own broker account
    assert make_link(hub, "phone-2")[0] == 200
    assert make_link(hub, "phone-2")[0] == 400  # already enrolled: rotate or revoke first


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
def test_bundles_need_the_devices_token(hub: HubApp) -> None:
    client = hub.web.app.test_client()
    assert client.get("/device/bundle/phone-model").status_code == 401
    assert client.get("/device/bundle/phone-model", headers={"Authorization": "Bearer phone-1:guess"}).status_code == 401
    _, token = make_link(hub, "phone-3")
    secret = provisioning(claim(client, token).get_data(as_text=True))["secret"]
    auth = {"Authorization": f"Bearer phone-3:{secret}"}
    assert client.get("/device/bundle/nothing-here", headers=auth).status_code == 404
    assert client.get("/device/bundle/phone-model/9.9.9", headers=auth).status_code == 404
    assert client.get("/device/bundle/phone-model", headers=auth).status_code == 200


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
def test_a_bundle_another_hub_published_is_served_from_the_knowledge_base(hub: HubApp, tmp_path: Path) -> None:
    """Hubs sharing the database but not a disk: the archive's file is on the other hub; its copy is in the database.
    A record without a copy (from before copies were kept) whose file is gone is a 404, not a 500."""
    kb = hub.service.kb
    elsewhere = str(tmp_path / "other-hub" / "phone.hgb")  # never written on this machine
    kb.add_bundle(BundleRecord("phone-model", "1.0.1", "", 12, b"", elsewhere, 2.0, archive=b"other hub's!"))
    kb.add_bundle(BundleRecord("phone-model", "1.0.2", "", 12, b"", elsewhere, 3.0))
    kb.add_bundle(BundleRecord("phone-model", "1.0.1", "", 12, b"", elsewhere, 2.0, "grpc://b:1"))  # re-recorded
    client = hub.web.app.test_client()
    _, token = make_link(hub, "phone-4")
    secret = provisioning(claim(client, token).get_data(as_text=True))["secret"]
    auth = {"Authorization": f"Bearer phone-4:{secret}"}
    served = client.get("/device/bundle/phone-model/1.0.1", headers=auth)
    assert served.status_code == 200 and served.data == b"other hub's!"  # a re-recorded row keeps its copy
    assert client.get("/device/bundle/phone-model/1.0.2", headers=auth).status_code == 404


def test_a_device_enrolled_for_a_target_downloads_only_bundles_built_for_it(hub: HubApp, tmp_path: Path) -> None:
    """GRPC FetchBundle refused another target's bundle (device_wrong_target); this download served any."""
    kb = hub.service.kb
    for version, target in (("2.0.0", "armv7"), ("2.0.1", "rpi4")):
        archive = tmp_path / f"watch-{version}.hgb"
        archive.write_bytes(f"bundle built for {target}".encode())
        kb.add_bundle(BundleRecord("watch-model", version, "", archive.stat().st_size, b"", str(archive), 1.0, "",
                                   target))
    auth = {"Authorization": f"Bearer {DeviceCredentials(kb).add('cam-7', target='rpi4').bearer}"}
    client = hub.web.app.test_client()
    refused = client.get("/device/bundle/watch-model/2.0.0", headers=auth)
    assert refused.status_code == 403 and b"bundle built for" not in refused.data
    assert "cam-7 runs rpi4; bundle watch-model 2.0.0 is for armv7" in refused.get_data(as_text=True)
    assert hub.service.metrics.get("device_wrong_target") == 1
    served = client.get("/device/bundle/watch-model/2.0.1", headers=auth)
    assert served.status_code == 200 and served.data == b"bundle built for rpi4"


def test_the_access_log_never_carries_a_phone_links_token(hub: HubApp, caplog: pytest.LogCaptureFixture) -> None:
    """The token is the link's path (`/device/join/<token>`), which werkzeug logged in clear."""
    _, token = make_link(hub, "phone-9")
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        try:  # the built page or its 503: the request line is logged either way, before the body is sent
            urllib.request.urlopen(f"{hub.web.url}/device/join/{token}", timeout=30).read()
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("GET /device/join/[redacted] " in line for line in lines), lines
    assert not any(token in line for line in lines)


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
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


TTL_S = 60


def phones(keys: Path) -> dict[str, object]:
    return {"public_key": str(keys / "signing.pub"), "mqtt_websocket_url": "ws://127.0.0.1:9001",
            "invite_ttl_s": TTL_S}


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
def test_a_link_made_on_one_hub_works_once_on_another(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys")
    with web_hub(tmp_path, phones=phones(tmp_path / "keys")) as first, \
            web_hub(tmp_path, phones=phones(tmp_path / "keys")) as second:
        add_people(first)
        status, token = make_link(first, "phone-a")
        assert status == 200 and token
        page = claim(second.web.app.test_client(), token)
        assert page.status_code == 200
        given = provisioning(page.get_data(as_text=True))
        assert given["device_id"] == "phone-a"
        for hub in (first, second):  # used: refused everywhere, and the secret is gone from the row
            again = hub.web.app.test_client().get(f"/device/join/{token}")
            assert again.status_code == 400 and "data-json" not in again.get_data(as_text=True)
        with first.service.kb.session() as s:
            row = s.scalars(select(PhoneInvite)).one()
            stored = s.get(DeviceCredential, "phone-a")
            assert row.sealed is None and row.redeemed_at is not None and token not in row.token_hash
            assert stored is not None and verify_secret(str(given["secret"]), stored.secret_hash)


@pytest.mark.usefixtures("phone_app_required")  # the page is served from the built app
def test_a_link_survives_a_hub_restart(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys")
    with web_hub(tmp_path, phones=phones(tmp_path / "keys")) as hub:
        add_people(hub)
        _, token = make_link(hub, "phone-b")
    with web_hub(tmp_path, phones=phones(tmp_path / "keys")) as restarted:
        page = claim(restarted.web.app.test_client(), token)
        assert page.status_code == 200 and provisioning(page.get_data(as_text=True))["device_id"] == "phone-b"


@pytest.fixture
def two_processes(kb_url: str, tmp_path: Path) -> Iterator[tuple[PhoneInvites, PhoneInvites, Clock]]:
    """Two hub processes' invites (own engines) on one database, with one clock."""
    make_keys(tmp_path / "keys")
    config = parse_hub_config({"knowledge_base": {"url": kb_url, "image_dir": str(tmp_path / "images")},
                               "phones": phones(tmp_path / "keys")})
    clock = Clock()
    kbs = [KnowledgeBase.open(kb_url, image_dir=tmp_path / "images") for _ in range(2)]
    yield (*(PhoneInvites(config, kb, DeviceCredentials(kb).add, clock) for kb in kbs), clock)  # type: ignore[misc]
    for kb in kbs:
        kb.close()


def test_one_redemption_wins_and_links_expire(two_processes: tuple[PhoneInvites, PhoneInvites, Clock]) -> None:
    first, second, clock = two_processes
    token = first.create("phone-c", "phone-model")
    won: list[str] = []
    refused: list[str] = []

    def redeem(invites: PhoneInvites) -> None:
        try:
            won.append(invites.redeem(token).device_id)
        except InviteUsedError:
            refused.append("refused")

    racers = [threading.Thread(target=redeem, args=(invites,)) for invites in (first, second) * 4]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert won == ["phone-c"] and len(refused) == 7
    late = second.create("phone-d", "phone-model")
    clock.now += TTL_S + 1
    with pytest.raises(InviteUsedError, match="unknown, already used or expired"):
        first.redeem(late)
    first.create("phone-e", "phone-model")  # creating prunes expired rows: only the live one is left
    with first.kb.session() as s:
        assert [row.device_id for row in s.scalars(select(PhoneInvite))] == ["phone-e"]


def test_a_wrong_or_tampered_token_is_refused(two_processes: tuple[PhoneInvites, PhoneInvites, Clock]) -> None:
    first, second, _ = two_processes
    token = first.create("phone-f", "phone-model")
    for bad in ("", "x" * 100, token[:-1], token + "A"):
        with pytest.raises(InviteUsedError):
            second.redeem(bad)
    with first.kb.session() as s:  # the database alone: no secret in clear
        sealed = s.scalars(select(PhoneInvite)).one().sealed
        assert sealed is not None and b"secret" not in sealed and b"phone-f" not in sealed
    assert second.redeem(token).device_id == "phone-f"


def test_the_link_page_warns_of_what_would_stop_the_phone(hub: HubApp) -> None:
    """An unknown bundle was found out only by the phone, after the single-use link was spent (HTTP 404)."""
    status, token, page = link_page(hub, "phone-5", bundle="nosuch")
    assert status == 200 and token  # the model may be published after the link is made
    assert "no bundle named &#39;nosuch&#39; is published on this hub yet" in page
    assert "phone-warning" not in link_page(hub, "phone-6")[2]  # published, broker WebSocket set: nothing to say
