"""Issue 15, the parts without a network: credential hashing (Mosquitto's format), add / rotate / revoke and token
checks against the knowledge base, the ACL the hub renders, the CLI verbs and the configuration rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.hub.broker_acl import PROBE_USER, device_registry, render_acl, render_passwords
from hgen.hub.cli import main
from hgen.hub.config import parse_hub_config
from hgen.hub.devices import (SLOW_RETRY_S, DeviceCredentialError, DeviceCredentials, hash_secret, secret_digest,
                              verify_secret)
from hgen.hub.errors import HubConfigError
from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import upgrade
from hgen.hub.kb.models import DeviceCredential
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.testing.clock import Clock
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)

# Written by `mosquitto_passwd -b pw alice secretpw` (Mosquitto 2.0.11): our checker must accept its format.
MOSQUITTO_LINE = ("alice:$7$101$gnWYa3nkQ+TMHNDi$7tJIS1l7b5CNu5z1i9hm+XNNJ/T2Zse8d4ZKgrfL5NPau3zKmKOXFtibq9VCkLEDZy/"
                  "DUm4oWwvMozRjFZLL2g==")


@pytest.fixture
def kb(tmp_path: Path):
    store = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    yield store
    store.close()


def test_hash_is_mosquittos_pbkdf2_format_and_checks_its_own_hashes() -> None:
    stored = MOSQUITTO_LINE.split(":", 1)[1]
    assert verify_secret("secretpw", stored) and not verify_secret("secretpw!", stored)
    ours = hash_secret("s3cret", iterations=1000)
    kind, iterations, salt, key = ours.split("$")[1:]
    assert (kind, iterations, len(salt), len(key)) == ("7", "1000", 16, 88)  # 12-byte salt, 64-byte key
    assert verify_secret("s3cret", ours) and not verify_secret("s3cret", None) and not verify_secret("x", "junk")
    assert hash_secret("s3cret") != hash_secret("s3cret")  # salted


def test_add_rotate_revoke_and_tokens(kb: KnowledgeBase) -> None:
    changes: list[str] = []
    devices = DeviceCredentials(kb, reserved={"hgen-hub"}, on_change=lambda: changes.append("sync"))
    issued = devices.add("cam-1", target="rpi4")
    assert issued.bearer == f"cam-1:{issued.secret}" and len(issued.secret) >= 40
    with kb.session() as s:
        row = s.get(DeviceCredential, "cam-1")
        assert row.secret_hash.startswith("$7$") and issued.secret not in row.secret_hash  # only the slow hash
    assert devices.authenticate(issued.bearer) == "cam-1"
    assert devices.authenticate(issued.bearer) == "cam-1"  # cached: same answer
    for bad in (f"cam-2:{issued.secret}", "cam-1:guess", "cam-1", "", f"../x:{issued.secret}"):
        assert devices.authenticate(bad) is None, bad
    with pytest.raises(DeviceCredentialError, match="already has a credential"):
        devices.add("cam-1")
    rotated = devices.rotate("cam-1")
    assert devices.authenticate(issued.bearer) is None and devices.authenticate(rotated.bearer) == "cam-1"
    assert rotated.target == "rpi4" and devices.state("cam-1").target == "rpi4"
    devices.revoke("cam-1")
    assert devices.authenticate(rotated.bearer) is None and not devices.is_active("cam-1")
    assert devices.active_hashes() == {}
    with pytest.raises(DeviceCredentialError):
        devices.rotate("cam-1")
    again = devices.add("cam-1")  # a revoked device may be enrolled again, with a new secret
    assert devices.authenticate(again.bearer) == "cam-1" and devices.authenticate(rotated.bearer) is None
    assert changes == ["sync"] * 4
    for name in ("hgen-hub", "bad/name", "+", "#", "", "x" * 200):
        with pytest.raises(DeviceCredentialError):
            devices.add(name)


def count_pbkdf2(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every PBKDF2 run from here on (by anyone in this process) appends its hash name."""
    calls: list[str] = []
    real = hashlib.pbkdf2_hmac

    def counted(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
    return calls


def forget_digest(kb: KnowledgeBase, device_id: str) -> None:
    """Make the row look issued before migration 0010 (PBKDF2 hash only)."""
    with kb.session() as s:
        s.get(DeviceCredential, device_id).secret_digest = None


def test_guessed_secrets_cost_no_pbkdf2_and_the_broker_keeps_its_hash(kb: KnowledgeBase, monkeypatch) -> None:
    """Every refused token for a known device id ran 100,000 PBKDF2 rounds (~54 ms of hub CPU, unbounded)."""
    devices = DeviceCredentials(kb)
    issued = devices.add("cam-7")
    pbkdf2 = count_pbkdf2(monkeypatch)
    for guess in ("guess", issued.secret[:-1], issued.secret + "x", "A" * len(issued.secret)):
        assert devices.authenticate(f"cam-7:{guess}") is None
    assert devices.authenticate(issued.bearer) == "cam-7"
    assert devices.authenticate(f"cam-7:{issued.secret}") == "cam-7"
    assert pbkdf2 == []  # neither refusals nor the right secret hash slowly
    with kb.session() as s:
        row = s.get(DeviceCredential, "cam-7")
        assert row.secret_digest == secret_digest("cam-7", issued.secret) and issued.secret not in row.secret_digest
        slow = row.secret_hash
    assert devices.active_hashes() == {"cam-7": slow} and slow.startswith("$7$")  # the broker's file: unchanged
    assert verify_secret(issued.secret, slow)
    rotated = devices.rotate("cam-7")
    assert devices.authenticate(issued.bearer) is None and devices.authenticate(rotated.bearer) == "cam-7"
    devices.revoke("cam-7")
    assert devices.authenticate(rotated.bearer) is None
    with kb.session() as s:
        assert s.get(DeviceCredential, "cam-7").secret_digest is None


def test_a_row_from_before_the_digest_gets_it_at_its_first_success(kb: KnowledgeBase, monkeypatch) -> None:
    """Old rows are checked with PBKDF2 once; a failed check holds off the next slow one of that device."""
    clock = Clock()
    devices = DeviceCredentials(kb, clock=clock)
    issued = devices.add("cam-7")
    other = devices.add("cam-8")
    forget_digest(kb, "cam-7")
    pbkdf2 = count_pbkdf2(monkeypatch)
    assert devices.authenticate("cam-7:guess") is None and len(pbkdf2) == 1
    for guess in ("guess-2", "guess-3"):
        assert devices.authenticate(f"cam-7:{guess}") is None
    assert len(pbkdf2) == 1  # held off for SLOW_RETRY_S
    assert devices.authenticate(other.bearer) == "cam-8" and len(pbkdf2) == 1  # other devices: unaffected
    clock.now += SLOW_RETRY_S
    assert devices.authenticate(issued.bearer) == "cam-7" and len(pbkdf2) == 2
    with kb.session() as s:
        assert s.get(DeviceCredential, "cam-7").secret_digest == secret_digest("cam-7", issued.secret)
    assert devices.authenticate("cam-7:guess-4") is None and devices.authenticate(issued.bearer) == "cam-7"
    assert len(pbkdf2) == 2  # upgraded: the fast digest from now on


def test_migration_0010_keeps_old_credentials_working(kb_url: str, monkeypatch) -> None:  # noqa: F811
    """A knowledge base at 0009 with a credential row migrates (SQLite batch mode, PostgreSQL); the row's device
    still authenticates, and its first success stores the digest."""
    engine = make_engine(kb_url)
    try:
        upgrade(engine, "0009")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO devices (id, registered_at, labour_spent, samples_replied) "
                                    "VALUES ('cam-old', 1.0, 0.0, 0)"))
            connection.execute(text("INSERT INTO device_credentials (device_id, secret_hash, target, issued_at) "
                                    "VALUES ('cam-old', :hash, 'rpi4', 1.0)"), {"hash": hash_secret("s3cret", 1000)})
    finally:
        engine.dispose()
    kb = KnowledgeBase.open(kb_url)
    try:
        devices = DeviceCredentials(kb)
        assert devices.state("cam-old").target == "rpi4"
        assert devices.authenticate("cam-old:s3cret") == "cam-old"
        with kb.session() as s:
            assert s.get(DeviceCredential, "cam-old").secret_digest == secret_digest("cam-old", "s3cret")
        pbkdf2 = count_pbkdf2(monkeypatch)
        assert devices.authenticate("cam-old:guess") is None and pbkdf2 == []
    finally:
        kb.close()


def test_revocation_seen_by_another_process_on_the_next_check(kb: KnowledgeBase) -> None:
    """Two hub processes share the database: a token cached by one is refused once the other revokes it."""
    serving, operator = DeviceCredentials(kb), DeviceCredentials(kb)
    issued = operator.add("cam-1")
    assert serving.authenticate(issued.bearer) == "cam-1"
    operator.revoke("cam-1")
    assert serving.authenticate(issued.bearer) is None


def test_acl_gives_each_device_only_its_own_topics() -> None:
    acl = render_acl("hgen/v1", "hgen-hub", ["cam-2", "cam-1"], extra="user dash\ntopic read results/#\n")
    blocks = acl.split("\n\n")
    assert "user hgen-hub\ntopic readwrite hgen/v1/#" in blocks[0]
    assert blocks[1] == ("user cam-1\ntopic write hgen/v1/cam-1/samples\ntopic write hgen/v1/cam-1/status\n"
                         "topic read hgen/v1/cam-1/replies\ntopic read hgen/v1/cam-1/updates")
    grants = [line for line in acl.splitlines() if line.startswith(("topic", "pattern"))]
    wildcards = [line for line in grants if "#" in line or "+" in line]
    assert wildcards == ["topic readwrite hgen/v1/#", "topic read results/#"]  # the hub's and the operator's only
    assert acl.endswith("user dash\ntopic read results/#\n")
    assert render_passwords({"a": "$7$1$x$y"}, "b:$7$1$z$w\n") == "a:$7$1$x$y\nb:$7$1$z$w\n"


def test_cli_verbs_show_the_secret_once_and_store_a_hash(tmp_path: Path, capsys) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}}))
    assert main(["add-device", "cam-7", "--target", "rpi4", "--config", str(config)]) == 0
    secret = capsys.readouterr().out.split("secret ")[1].split()[0]
    assert main(["add-device", "cam-7", "--config", str(config)]) == 2  # already enrolled: bad input
    assert "already has a credential" in capsys.readouterr().err
    assert main(["rotate-device", "cam-7", "--config", str(config)]) == 0
    rotated = capsys.readouterr().out.split("secret ")[1].split()[0]
    assert rotated != secret
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        devices = DeviceCredentials(kb)
        assert devices.authenticate(f"cam-7:{rotated}") == "cam-7" and devices.authenticate(f"cam-7:{secret}") is None
        assert main(["revoke-device", "cam-7", "--config", str(config)]) == 0
        assert devices.authenticate(f"cam-7:{rotated}") is None
    finally:
        kb.close()
    assert main(["revoke-device", "cam-7", "--config", str(config)]) == 2  # nothing left to revoke: bad input


def test_config_rules(tmp_path: Path) -> None:
    access = {"password_file": "p", "acl_file": "a", "pid_file": "m.pid"}
    with pytest.raises(HubConfigError, match="mqtt.password is required"):
        parse_hub_config({"mqtt": {"enabled": True, "access": access}})
    with pytest.raises(HubConfigError, match="exactly one of pid_file and reload_command"):
        parse_hub_config({"mqtt": {"password": "x", "access": {**access, "reload_command": ["true"]}}})
    config = parse_hub_config({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'h.db'}"},
                               "mqtt": {"password": "hub-pw", "access": access}})
    assert "hub-pw" not in repr(config) and config.mqtt.username == "hgen-hub"
    kb = KnowledgeBase.open(config.knowledge_base.url)
    try:
        registry = device_registry(config, kb)
        assert registry.on_change is not None and {"hgen-hub", PROBE_USER} <= registry.reserved
    finally:
        kb.close()
    agent = {"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k"}, "source": {"kind": "video", "uri": "v"},
             "hub": {"url": "mqtt://h:1883", "secret": "s3cret-value"}}
    assert "s3cret-value" not in repr(parse_agent_config(agent))
    with pytest.raises(AgentConfigError):
        parse_agent_config({**agent, "hub": {"url": "mqtt://h:1883", "password": "x"}})


def test_a_broker_that_does_not_reload_does_not_cost_the_new_secret(tmp_path: Path, capsys) -> None:
    """The enrolment was stored, the reload failed, and no secret file was written: the secret existed nowhere and
    a retry said the device already had a credential."""
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}, "mqtt": {
        "password": "hub-pw", "access": {"password_file": str(tmp_path / "passwd"), "acl_file": str(tmp_path / "acl"),
                                         "reload_command": ["false"], "reload_timeout_s": 1}}}))
    secret_file = tmp_path / "cam-7.secret"
    assert main(["add-device", "cam-7", "--config", str(config), "--secret-file", str(secret_file)]) == 1
    assert "its credentials are issued (above), but the broker did not take them yet" in capsys.readouterr().err
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        assert DeviceCredentials(kb).authenticate(f"cam-7:{secret_file.read_text().strip()}") == "cam-7"
    finally:
        kb.close()


def test_a_first_add_device_before_the_broker_runs_writes_the_files_and_says_to_start_it(tmp_path: Path,
                                                                                          capsys) -> None:
    """Mosquitto refuses to start without its password file and the hub needs its pid file to reload it: the docs
    gave no order, and the error named only a missing pid file."""
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}, "mqtt": {
        "password": "hub-pw", "access": {"password_file": str(tmp_path / "passwd"), "acl_file": str(tmp_path / "acl"),
                                         "pid_file": str(tmp_path / "mosquitto.pid"), "reload_timeout_s": 1}}}))
    assert main(["add-device", "cam-7", "--config", str(config), "--secret-file", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "(is Mosquitto running?)" in err and "start Mosquitto now" in err
    assert "cam-7:" in (tmp_path / "passwd").read_text() and "cam-7" in (tmp_path / "acl").read_text()
