"""Onboarding phones: the operator makes a single-use link that provisions one phone (device id, its secret, the
bundle it runs, the key it pins, the broker's WebSocket address) and opens device mode.

Invites live in the hub process's memory, hashed, and expire after `phones.invite_ttl_s`: a link is worth one
device credential, so it is used once and never stored in clear. (Behind several hub processes, send people to
the process that made the link.)
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hgen.hub.config import HubConfig
from hgen.hub.errors import BadInputError, HubConfigError
from hgen.runtime.signing import load_public_key, raw_public_bytes

APP_DIR = Path(__file__).resolve().parents[2] / "android_bridge"
DIST = APP_DIR / "dist"  # `make android-bridge` builds it (npm ci + npm run build)


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

    def __init__(self, config: HubConfig, issue: Callable[[str], Any], clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.issue = issue
        self.clock = clock
        self._pending: dict[str, tuple[PhoneProvisioning, float]] = {}
        self._lock = threading.Lock()

    def create(self, device_id: str, bundle_name: str) -> str:
        """Enroll `device_id` and return the link's token (shown once)."""
        key = pinned_key(self.config)
        credential = self.issue(device_id)
        phones = self.config.phones
        provisioning = PhoneProvisioning(device_id, credential.secret, bundle_name, key, phones.mqtt_websocket_url,
                                         self.config.mqtt.prefix, phones.labour_share,
                                         phones.min_escalation_interval_s)
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            self._pending[_digest(token)] = (provisioning, self.clock() + phones.invite_ttl_s)
        return token

    def redeem(self, token: str) -> PhoneProvisioning:
        with self._lock:
            self._expire()
            found = self._pending.pop(_digest(token), None)
        if found is None:
            raise InviteUsedError("this phone link is unknown, already used or expired: ask the operator for a new one")
        return found[0]

    def _expire(self) -> None:
        now = self.clock()
        for digest in [d for d, (_, until) in self._pending.items() if until < now]:
            del self._pending[digest]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
