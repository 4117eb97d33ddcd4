"""Onboarding phones: the operator makes a single-use link that provisions one phone (device id, its secret, the
bundle it runs, the key it pins, the broker's WebSocket address) and opens device mode.

Invites live in the knowledge base (`phone_invites`), so a link made by one hub process works on any other on the
same database and survives a restart. A link is worth one device credential: the row is found by the token's
SHA-256, its provisioning is sealed (AES-GCM) with a key derived from the token, which only the link carries, and
redeeming it is one conditional transaction, so it works once, on one process, until `phones.invite_ttl_s` passes.
Opening the link (GET) only shows a button; the button's POST redeems it, so a link preview cannot use it up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hgen.hub.config import HubConfig
from hgen.hub.errors import BadInputError, HubConfigError, HubError
from hgen.hub.kb.models import PhoneInvite
from hgen.hub.kb.store import KnowledgeBase
from hgen.runtime.signing import load_public_key, raw_public_bytes
from sqlalchemy import delete, select

APP_PACKAGE, APP_FOLDER = "hgen.hub.web", "device_app"  # android_bridge/build.mjs writes the page's files there
BUILD_COMMAND = "make android-bridge (npm ci && npm run build in android_bridge/)"


class PhoneAppMissingError(HubError):
    """The device page's build (its script, wasm and service worker) is not installed with the hub."""


def device_app() -> Path:
    """The built page as package data of `hgen.hub.web` (importlib.resources), so an installed hub serves it
    without the source checkout; a wheel ships it when it was built first (setup.py builds it if npm is there)."""
    folder = resources.files(APP_PACKAGE).joinpath(APP_FOLDER)
    if not folder.joinpath("device.js").is_file():
        raise PhoneAppMissingError(f"the phone app is not built into {APP_PACKAGE}/{APP_FOLDER}: run {BUILD_COMMAND} "
                                   "in the source checkout, then reinstall the hub (or install a wheel built after it)")
    return Path(str(folder))


class InviteUsedError(BadInputError):
    """The onboarding link is unknown, used or expired."""

    code = "phone_invite_invalid"


@dataclass(frozen=True)
class PhoneProvisioning:
    """What the phone stores (android_bridge/src/provision.ts reads the same fields)."""

    device_id: str
    secret: str
    bundle_name: str
    public_key: str
    mqtt_url: str | None
    mqtt_topic_prefix: str
    labour_share: float | None
    min_escalation_interval_s: float
    audit_share: float
    audit_seed: int
    unfamiliar_share: float
    # the largest sample the hub takes (mqtt.max_payload_bytes): the phone shrinks or refuses a larger one, which the
    # broker would drop while the link still read 'connected'; None in links made before (the phone's own cap)
    max_payload_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pinned_key(config: HubConfig) -> str:
    """base64 of the raw Ed25519 key phones pin: `phones.public_key`, else the retrain key's `.pub`."""
    path = config.phones.public_key
    if path is None and config.retrain.signing_key is not None:
        path = Path(config.retrain.signing_key).with_suffix(".pub")
    if path is None or not Path(path).is_file():
        raise HubConfigError("phones need a key to pin: set phones.public_key (or retrain.signing_key with its .pub)")
    return base64.b64encode(raw_public_bytes(load_public_key(Path(path)))).decode()


class PhoneInvites:
    """Single-use onboarding links: `create` issues the device's credential at once, `redeem` hands it out once."""

    def __init__(self, config: HubConfig, kb: KnowledgeBase, issue: Callable[[str], Any],
                 clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.kb = kb
        self.issue = issue
        self.clock = clock or kb.clock

    def create(self, device_id: str, bundle_name: str) -> str:
        """Enroll `device_id` and return the link's token (shown once, never stored)."""
        key = pinned_key(self.config)
        credential = self.issue(device_id)
        phones = self.config.phones
        provisioning = PhoneProvisioning(device_id, credential.secret, bundle_name, key, phones.mqtt_websocket_url,
                                         self.config.mqtt.prefix, phones.labour_share,
                                         phones.min_escalation_interval_s, phones.audit_share, phones.audit_seed,
                                         phones.unfamiliar_share, self.config.mqtt.max_payload_bytes)
        token, now = secrets.token_urlsafe(32), self.clock()
        digest = _digest(token)
        with self.kb.session() as s:
            s.execute(delete(PhoneInvite).where(PhoneInvite.expires_at < now))
            s.add(PhoneInvite(token_hash=digest, device_id=device_id, sealed=_seal(token, digest, provisioning),
                              created_at=now, expires_at=now + phones.invite_ttl_s))
        return token

    def pending(self, token: str) -> str:
        """The device id an unused, unexpired link is for, without spending it: the page a GET shows (a chat
        app's link preview fetches the URL; only the person's POST may redeem it)."""
        with self.kb.session() as s:
            row = s.scalars(select(PhoneInvite).where(PhoneInvite.token_hash == _digest(token))).first()
            if row is None or row.sealed is None or row.expires_at < self.clock():
                raise InviteUsedError("this phone link is unknown, already used or expired: ask the operator for a "
                                      "new one")
            return row.device_id

    def redeem(self, token: str) -> PhoneProvisioning:
        """The provisioning, once: the row is locked, checked and emptied in one transaction (any hub process)."""
        digest, now = _digest(token), self.clock()
        with self.kb.session() as s:
            row = s.scalars(select(PhoneInvite).where(PhoneInvite.token_hash == digest).with_for_update()).first()
            sealed = row.sealed if row is not None and row.expires_at >= now else None
            if row is not None and sealed is not None:
                row.sealed, row.redeemed_at = None, now
        if sealed is None:
            raise InviteUsedError("this phone link is unknown, already used or expired: ask the operator for a new one")
        return _open(token, digest, sealed)


def _key(token: str) -> bytes:
    """The sealing key: derived from the token (domain-separated from the row's lookup digest)."""
    return hashlib.sha256(b"hgen phone invite key\0" + token.encode()).digest()


def _seal(token: str, digest: str, provisioning: PhoneProvisioning) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(_key(token)).encrypt(nonce, json.dumps(provisioning.to_json()).encode(), digest.encode())


def _open(token: str, digest: str, sealed: bytes) -> PhoneProvisioning:
    try:
        plain = AESGCM(_key(token)).decrypt(sealed[:12], sealed[12:], digest.encode())
    except InvalidTag:
        raise InviteUsedError("this phone link does not open its invitation: ask the operator for a new one") from None
    return PhoneProvisioning(**json.loads(plain))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
