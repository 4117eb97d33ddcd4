"""Real external services for tests and benchmarks: Mosquitto and PostgreSQL on free loopback ports.

Every Mosquitto started here authenticates clients (`allow_anonymous false`) with the password file and ACL
that the hub owns (hgen.hub.broker_acl), seeded with the hub's account; `Broker.hub_mqtt()` is the hub's
`mqtt` config section that lets it rewrite and reload them, and `add_account` adds a static account
(a results sink, a test's reader or attacker) to the files the hub appends verbatim.

As hub/broker/mosquitto.conf.example ships it, devices and hubs connect on different listeners: on the devices'
(`Broker.port`, and `ws_port`) the broker uses each client's user name as its client id, so no account can take
over another client's session (`use_username_as_clientid`); the hubs' listener (`Broker.hub_port`, where
`hub_mqtt()` points) keeps the client ids hubs choose, as several hub processes share one account.

Readiness is an event, not a sleep: Mosquitto is ready when it logs "running"; PostgreSQL when `pg_ctl -w`
returns. Both stop (and are reaped) when their context exits.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import time
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgen.hub.errors import HubError

if TYPE_CHECKING:
    from hgen.hub.service import HubService

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


class ServiceUnavailableError(HubError):
    """The service's binary is not installed on this machine; tests skip with this message."""


class ServiceStartError(HubError):
    """The service was found but did not start; the message carries its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], object], timeout_s: float = 30.0) -> bool:
    """Poll a condition for tests: it returns as soon as the condition holds (the timeout is a deadline for a
    test that fails, not a pause standing in for synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass(frozen=True)
class BrokerTls:
    """PEM files of a TLS listener; `require_certificate` makes clients show one signed by `ca_file`."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False

    def listener_lines(self) -> str:
        return (f"cafile {self.ca_file}\ncertfile {self.cert_file}\nkeyfile {self.key_file}\n"
                f"require_certificate {str(self.require_certificate).lower()}\n")


HUB_USER = "hgen-hub"


@dataclass(frozen=True)
class BrokerAccessFiles:
    """The access files of one test broker, in `folder`, and the hub's password for them."""

    folder: Path
    hub_password: str

    @classmethod
    def seed(cls, folder: Path, prefix: str = "hgen/v1") -> BrokerAccessFiles:
        """The hub's account only, so the hub can connect before its first sync; no extra accounts yet."""
        from hgen.hub.broker_acl import render_acl, render_passwords, write_atomic
        from hgen.hub.devices import hash_secret

        if (folder / "hub-password").exists():  # a restarted broker keeps what the hub wrote
            return cls(folder, (folder / "hub-password").read_text())
        files = cls(folder, secrets.token_urlsafe(24))
        write_atomic(files.hub_password_file, files.hub_password, mode=0o600)  # throw-away broker: for `load`
        write_atomic(files.password_file, render_passwords({HUB_USER: hash_secret(files.hub_password)}))
        write_atomic(files.acl_file, render_acl(prefix, HUB_USER, ()))
        for extra in (files.extra_password_file, files.extra_acl_file):
            extra.touch()
        return files

    @classmethod
    def load(cls, parent: Path) -> BrokerAccessFiles:
        """The files of the one broker started with `mosquitto(parent)` (the demo finds its broker so)."""
        return cls.seed(next(parent.glob("*/hub-password")).parent)

    hub_password_file = property(lambda self: self.folder / "hub-password")
    password_file = property(lambda self: self.folder / "passwords")
    acl_file = property(lambda self: self.folder / "acl")
    pid_file = property(lambda self: self.folder / "mosquitto.pid")
    extra_password_file = property(lambda self: self.folder / "extra-passwords")
    extra_acl_file = property(lambda self: self.folder / "extra-acl")

    def conf_lines(self) -> str:
        return (f"allow_anonymous false\npassword_file {self.password_file}\nacl_file {self.acl_file}\n"
                f"pid_file {self.pid_file}\n")

    def hub_mqtt(self, host: str, port: int, **extra: object) -> dict[str, object]:
        """The hub's `mqtt` config section for this broker (hub-managed access, SIGHUP through the pid file)."""
        return {"enabled": True, "host": host, "port": port, "username": HUB_USER, "password": self.hub_password,
                "access": {"password_file": str(self.password_file), "acl_file": str(self.acl_file),
                           "pid_file": str(self.pid_file), "extra_password_file": str(self.extra_password_file),
                           "extra_acl_file": str(self.extra_acl_file)}, **extra}

    def add_account(self, username: str, topics: Sequence[str], host: str, port: int) -> str:
        """A static account with `topic ...` ACL lines (e.g. "readwrite results/#"); returns its password once the
        broker accepts it. Appended to the live files too, so it works with or without a hub."""
        from hgen.hub.broker_acl import broker_accepts
        from hgen.hub.config import MqttConfig
        from hgen.hub.devices import hash_secret

        password = secrets.token_urlsafe(18)
        entry = f"{username}:{hash_secret(password, 1000)}\n"
        acl = f"\nuser {username}\n" + "".join(f"topic {t}\n" for t in topics)
        for path, text in ((self.extra_password_file, entry), (self.password_file, entry),
                           (self.extra_acl_file, acl), (self.acl_file, acl)):
            with open(path, "a") as handle:
                handle.write(text)
        os.kill(int(self.pid_file.read_text().split()[0]), signal.SIGHUP)
        probe = MqttConfig(host=host, port=port)
        deadline = time.monotonic() + 10
        while not broker_accepts(probe, username, password):
            if time.monotonic() > deadline:
                raise ServiceStartError(f"the broker did not load the account {username!r}")
            time.sleep(0.05)
        return password


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    process: subprocess.Popen
    tls: bool = False
    access: BrokerAccessFiles | None = None
    ws_port: int = 0  # the WebSockets listener phones use (0: none), same accounts and ACL
    hub_port: int = 0  # the hubs' listener (client ids kept as chosen); 0: hubs use `port` too

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}" if self.ws_port else ""

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def hub_mqtt(self, **extra: object) -> dict[str, object]:
        assert self.access is not None
        return self.access.hub_mqtt(self.host, self.hub_port or self.port, **extra)

    def add_account(self, username: str, topics: Sequence[str]) -> str:
        assert self.access is not None
        return self.access.add_account(username, topics, self.host, self.port)


def closing_maker(open_one: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A pytest fixture's body: yields `make(**settings)`, which opens one more (hub, service, ...) with `open_one`;
    everything made is closed afterwards, newest last."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        made.append(open_one(*args, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_CANDIDATES if os.path.exists(p)), None)
    if not found:
        raise ServiceUnavailableError("mosquitto is not installed (Debian package `mosquitto`)")
    return found


# What hub/broker/mosquitto.conf.example ships for delivery (docs/protocol.md, Delivery guarantees): persist, save
# every 100 changes rather than every 30 minutes, and bound the queues; the test brokers use the same lines.
BROKER_DURABILITY = ("persistence true\nautosave_on_changes true\nautosave_interval 100\n"
                     "max_queued_messages 100000\nmax_inflight_messages 100\n")
# The example's packet cap: above the hub's default mqtt.max_payload_bytes (8 MiB), which the hub enforces itself.
BROKER_LIMITS = "max_packet_size 9437184\n"
# Listener lines of the example's devices' listeners: the client id is the user name (no session takeover).
DEVICE_LISTENER = "use_username_as_clientid true\n"


@contextmanager
def mosquitto(workdir: Path | None = None, start_timeout_s: float = 15.0,
              tls: BrokerTls | None = None, websockets: bool = False) -> Iterator[Broker]:
    """A private Mosquitto with persistence (so sessions survive a hub restart) on a free port for devices, and
    another for hubs (`hub_port`); with `tls`, both are TLS listeners (mqtts://) and nothing listens in plaintext.
    `websockets` adds a plaintext WebSockets listener on another free port (phones' browsers), with the same
    authentication and ACL. Every device listener binds the client id to the user name."""
    binary = mosquitto_binary()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        port = free_port()
        conf = Path(tmp, "mosquitto.conf")
        # As root, Mosquitto would drop to user `mosquitto`, which cannot write our temp persistence folder.
        user = "user root\n" if os.geteuid() == 0 else ""
        tls_lines = tls.listener_lines() if tls else ""
        hub_port = free_port()
        listener = (f"listener {port} 127.0.0.1\n{tls_lines}{DEVICE_LISTENER}"
                    f"listener {hub_port} 127.0.0.1\n{tls_lines}")
        ws_port = free_port() if websockets else 0
        if ws_port:
            listener += f"listener {ws_port} 127.0.0.1\nprotocol websockets\n{DEVICE_LISTENER}"
        access = BrokerAccessFiles.seed(Path(tmp))
        conf.write_text(f"{user}{listener}{access.conf_lines()}persistence_location {tmp}/\n{BROKER_DURABILITY}{BROKER_LIMITS}"
                        f"log_dest stderr\nlog_type error\nlog_type warning\n"
                        f"log_type notice\nlog_type information\nconnection_messages false\n")
        process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_line(process, "running", start_timeout_s)
            yield Broker("127.0.0.1", port, process, tls is not None, access, ws_port, hub_port)
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate a child service and wait; kill it if it has not exited after `grace_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill9(process: subprocess.Popen) -> None:
    """SIGKILL, as a power cut would: no clean-up runs in the child."""
    process.kill()
    process.wait(timeout=10)


def _wait_for_line(process: subprocess.Popen, needle: str, timeout: float) -> None:
    """Read the process's stderr on a thread until `needle` appears; keep draining it afterwards."""
    ready = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if needle in line:
                ready.set()
        ready.set()  # EOF: the process ended

    threading.Thread(target=pump, name="service-log", daemon=True).start()
    if not ready.wait(timeout) or process.poll() is not None:
        raise ServiceStartError(f"{process.args[0]} did not start:\n{''.join(lines[-20:])}")


# --- PostgreSQL -----------------------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise ServiceUnavailableError("PostgreSQL server binaries are not installed (Debian package `postgresql`)")
    return Path(found[-1]).parent


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres(start_timeout_s: int = 60) -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster (trust auth, fsync off) run as `postgres` when we are root."""
    bindir = postgres_bindir()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres"
    with tempfile.TemporaryDirectory(prefix="hgen-pg-") as tmp:
        data, log_file = Path(tmp, "data"), Path(tmp, "server.log")
        if as_root:
            shutil.chown(tmp, "postgres")
        _run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"])
        port = free_port()
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        ctl = prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log_file)]
        try:
            _run(ctl + ["-o", options, "-w", "-t", str(start_timeout_s), "start"])
        except ServiceStartError as exc:
            raise ServiceStartError(f"{exc}\n{log_file.read_text() if log_file.exists() else ''}") from None
        try:
            yield PostgresServer(port, user)
        finally:
            subprocess.run(ctl + ["-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ServiceStartError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def answer_next(hub: HubService, annotator: str) -> str:
    """Take the next task on this hub and answer it (class 1); the device its sample came from."""
    from hgen.hub.kb.models import Sample
    from hgen.protos import hub_pb2

    task = hub.annotators.next_task(annotator)
    assert task is not None
    hub.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=annotator, class_id=1,
                                                operations=1))
    with hub.kb.session() as s:
        return str(s.get(Sample, task.sample_id).device_id)
