"""The hub owns the MQTT broker's access control: Mosquitto's password file and ACL, rendered from the knowledge base.

Per device X (its user name is its id): publish only `<prefix>/X/samples` and `<prefix>/X/status`, read only
`<prefix>/X/replies` and `<prefix>/X/updates`. Only the hub's account may write replies and (retained) updates.
Nothing is granted to anyone else (the broker runs with `allow_anonymous false`), and a revoked device has
neither an account nor ACL lines, so the reload that drops it also disconnects it, while other clients stay.

After writing, the hub signals the broker (SIGHUP via its pid file, or a command such as `systemctl reload`) and
waits until the broker accepts a fresh throw-away probe account written with the files: then the new files are
in force, and a caller that just issued a credential can hand it to a device without a race.

Syncs are serialised across processes (a hub starting while `hgen-hub revoke-device` runs, or several hub
processes) by an exclusive `flock` on `<acl_file>.lock`, and each reads the credentials only once it holds it:
otherwise a sync that read them just before a revoke committed could write its stale files after the revoke's
sync, and let the revoked device back in.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from hgen.hub.config import HubConfig, MqttAccessConfig, MqttConfig
from hgen.hub.devices import DeviceCredentials, hash_secret
from hgen.hub.errors import HubError
from hgen.hub.kb.store import KnowledgeBase

log = logging.getLogger(__name__)
PROBE_USER = "hgen-reload-probe"
PROBE_ITERATIONS = 1_000  # the probe's secret is random, lives seconds and grants nothing
FILE_MODE = 0o640  # the hub writes, the broker (same group) reads, nobody else
HEADER = "# Written by hgen-hub from its knowledge base; edits here are lost at the next add/revoke/rotate-device.\n"


class BrokerReloadError(HubError):
    """The broker could not be told to reload, or did not load the new files in time."""


def device_topics(prefix: str, device_id: str) -> list[str]:
    """The ACL lines of one device: its own two outgoing topics (write) and two incoming ones (read)."""
    return [f"topic write {prefix}/{device_id}/samples", f"topic write {prefix}/{device_id}/status",
            f"topic read {prefix}/{device_id}/replies", f"topic read {prefix}/{device_id}/updates"]


def render_acl(prefix: str, hub_user: str, devices: Iterable[str], extra: str = "") -> str:
    # the hub may read the broker's version: Mosquitto before 2.0.13 lets more QoS 1 messages into flight than the
    # hub's Receive Maximum, and the hub warns of it (hgen.hub.transports.mqtt)
    blocks = [f"user {hub_user}\ntopic readwrite {prefix}/#\ntopic read $SYS/broker/version\n"]
    blocks += [f"user {device}\n" + "\n".join(device_topics(prefix, device)) + "\n" for device in sorted(devices)]
    return HEADER + "\n".join(blocks) + (f"\n# extra_acl_file\n{extra}" if extra else "")


def render_passwords(hashes: Mapping[str, str], extra: str = "") -> str:
    lines = "".join(f"{user}:{digest}\n" for user, digest in hashes.items())
    return lines + extra  # Mosquitto's password file has no comment syntax: no header here


def write_atomic(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Readers (the broker mid-reload) see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_extra(path: Path | None) -> str:
    if path is None:
        return ""
    text = path.read_text()
    return text if not text or text.endswith("\n") else text + "\n"


class BrokerAccess:
    """Renders, writes and reloads; `sync` is safe to call from any hub process or CLI verb at any time."""

    def __init__(self, mqtt_config: MqttConfig, device_hashes: Callable[[], Mapping[str, str]]) -> None:
        assert mqtt_config.access is not None and mqtt_config.password is not None
        self.mqtt = mqtt_config
        self.access: MqttAccessConfig = mqtt_config.access
        self.device_hashes = device_hashes
        self._hub_hash = hash_secret(mqtt_config.password.get_secret_value())
        self._lock = threading.Lock()

    def sync(self) -> None:
        """Write both files from the current credentials and wait until the broker enforces them."""
        with self._lock, self._exclusive():
            for attempt in (1, 2):  # a concurrent sync by another process may replace our probe: once more
                probe = secrets.token_urlsafe(24)
                self._write(probe)
                self._reload()
                if self._wait_loaded(probe):
                    return
                log.warning("broker did not load the access files (attempt %d)", attempt)
            raise BrokerReloadError(f"the broker at {self.mqtt.host}:{self.mqtt.port} did not load "
                                    f"{self.access.password_file} within {self.access.reload_timeout_s}s")

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the lock file next to the ACL (created if missing) against every other process's sync."""
        path = self.access.acl_file.with_name(self.access.acl_file.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, FILE_MODE)  # read-only suffices for flock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, probe: str) -> None:
        """Reads the credentials now, under the cross-process lock: a revoke committed before it is seen."""
        devices = dict(self.device_hashes())
        hashes = {self.mqtt.username: self._hub_hash, PROBE_USER: hash_secret(probe, PROBE_ITERATIONS), **devices}
        write_atomic(self.access.acl_file, render_acl(self.mqtt.prefix, self.mqtt.username, devices,
                                                      _read_extra(self.access.extra_acl_file)))
        write_atomic(self.access.password_file, render_passwords(hashes,
                                                                 _read_extra(self.access.extra_password_file)))

    def _reload(self) -> None:
        if self.access.pid_file is not None and not self.access.pid_file.exists():
            raise BrokerReloadError(f"could not make the broker reload its access files: no {self.access.pid_file} "
                                    f"(is Mosquitto running?). {self.access.password_file} and "
                                    f"{self.access.acl_file} are written: start Mosquitto now, then this again")
        try:
            if self.access.pid_file is not None:
                os.kill(int(self.access.pid_file.read_text().split()[0]), signal.SIGHUP)
            else:
                subprocess.run(list(self.access.reload_command), check=True, capture_output=True, timeout=30)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
            raise BrokerReloadError(f"could not make the broker reload its access files: {exc}") from exc

    def _wait_loaded(self, probe: str) -> bool:
        deadline = time.monotonic() + self.access.reload_timeout_s
        while time.monotonic() < deadline:
            if broker_accepts(self.mqtt, PROBE_USER, probe, timeout_s=min(2.0, self.access.reload_timeout_s)):
                return True
            time.sleep(0.05)
        return False


def broker_accepts(config: MqttConfig, username: str, password: str, timeout_s: float = 2.0) -> bool:
    """Does the broker accept this account right now? (one short-lived connection, nothing subscribed)"""
    from hgen.hub.transports.mqtt import tls_files  # the transport imports this module: import late

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{PROBE_USER}-{secrets.token_hex(4)}",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    if config.tls is not None:
        client.tls_set(**tls_files(config.tls))
    answer: list[bool] = []
    client.on_connect = lambda _c, _u, _f, reason_code, _p: answer.append(not reason_code.is_failure)
    try:
        client.connect(config.host, config.port, keepalive=10)
        deadline = time.monotonic() + timeout_s
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        client.disconnect()
    except OSError:
        return False
    return bool(answer and answer[0])


def device_registry(config: HubConfig, kb: KnowledgeBase) -> DeviceCredentials:
    """The device credentials of this hub; with `mqtt.access`, every change also rewrites and reloads the broker."""
    reserved = {config.mqtt.username, PROBE_USER}
    credentials = DeviceCredentials(kb, reserved=reserved)
    if config.mqtt.access is not None:
        access = BrokerAccess(config.mqtt, credentials.active_hashes)
        credentials.on_change = access.sync
    return credentials


@contextmanager
def open_registry(config: HubConfig) -> Iterator[DeviceCredentials]:
    """The device credentials from outside a serving hub (the CLI verbs, the demo): same database, same broker."""
    kb = KnowledgeBase.of_config(config.knowledge_base)
    try:
        yield device_registry(config, kb)
    finally:
        kb.close()
