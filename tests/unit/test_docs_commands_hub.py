"""The hub verbs the operator guide walks through, as a user runs them: `add-device --secret-file` writes what
tools/flash/build_kit.py --secret-file reads (the secret alone, mode 0600), and `add-user` on an existing name is
refused unless --replace (and keeps its role unless --role is given)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
import yaml
from hgen.hub.cli import main
from hgen.hub.devices import DeviceCredentials
from hgen.hub.kb.store import KnowledgeBase


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}}))
    return path


def authenticates(tmp_path: Path, device: str, secret: str) -> bool:
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        return DeviceCredentials(kb).authenticate(f"{device}:{secret}") == device
    finally:
        kb.close()


def test_secret_file_holds_the_secret_alone_for_the_flash_kit(tmp_path: Path, config: Path, capsys) -> None:
    secret_file = tmp_path / "cam-7.secret"
    assert main(["add-device", "cam-7", "--target", "rpi4", "--config", str(config),
                 "--secret-file", str(secret_file)]) == 0
    secret = secret_file.read_text().strip()  # as build_kit.py reads it
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600 and secret_file.read_text() == secret + "\n"
    assert secret not in capsys.readouterr().out and authenticates(tmp_path, "cam-7", secret)

    assert main(["add-device", "cam-7", "--config", str(config), "--secret-file", str(secret_file)]) == 2  # enrolled
    assert secret_file.read_text().strip() == secret  # a refused enrolment leaves the working secret alone

    assert main(["rotate-device", "cam-7", "--config", str(config), "--secret-file", str(secret_file)]) == 0
    rotated = secret_file.read_text().strip()
    assert rotated != secret and authenticates(tmp_path, "cam-7", rotated)
    assert not authenticates(tmp_path, "cam-7", secret)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cam-7")] == []  # no temporary file left


def test_an_unwritable_secret_file_is_refused_before_the_device_is_enrolled(tmp_path: Path, config: Path,
                                                                            capsys) -> None:
    assert main(["add-device", "cam-8", "--config", str(config), "--secret-file",
                 str(tmp_path / "missing" / "cam-8.secret")]) == 2
    assert "--secret-file" in capsys.readouterr().err
    assert main(["add-device", "cam-8", "--config", str(config)]) == 0  # nothing was issued the first time


def test_add_user_refuses_an_existing_name_unless_replace_and_keeps_its_role(config: Path, capsys,
                                                                              monkeypatch) -> None:
    """`add-user alice` on an existing operator replaced her password, demoted her to annotator and exited 0."""
    def add(*extra: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
        return main(["add-user", "--config", str(config), "--name", "alice", *extra])

    assert add("--role", "operator") == 0
    assert "account alice (operator) created" in capsys.readouterr().out
    assert add() == 2
    assert "an account 'alice' (operator) exists" in capsys.readouterr().err
    assert add("--replace") == 0
    assert "account alice (operator) existed: password replaced, its sessions ended" in capsys.readouterr().out
    assert add("--replace", "--role", "annotator") == 0
    assert "account alice (annotator) existed" in capsys.readouterr().out


def test_revoking_an_unknown_device_or_enrolling_for_an_unknown_target_is_bad_input(config: Path, capsys) -> None:
    assert main(["add-device", "cam-8", "--target", "rpi9", "--config", str(config)]) == 2
    assert "--target 'rpi9' is not a target profile; valid choices: android-arm64" in capsys.readouterr().err
    assert main(["revoke-device", "nobody", "--config", str(config)]) == 2
    assert main(["rotate-device", "nobody", "--config", str(config)]) == 2
    assert "nobody" in capsys.readouterr().err
