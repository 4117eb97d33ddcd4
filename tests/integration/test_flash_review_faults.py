"""Review faults of the flash kit (tools/flash): re-installs that kept the old config and code, the agent's user
and the unit's hardening, --out wiped, inputs unchecked, the TLS CA left out, TARGET ignored, Restart=always.

install.sh runs for real into a temporary PREFIX with a small stand-in `hgen` wheel (its `hgen-agent` prints
which build it is), so an install takes seconds. Its root/systemd decisions run with stand-ins for id, useradd,
chown, getent, runuser and systemctl on PATH that record their calls (UNIT_DIR puts the unit in the test folder).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from hgen.compiler.testing import cached_litert_bundles
from hgen.edge_agent.testing import make_keys

REPO = Path(__file__).resolve().parents[2]
FLASH = REPO / "tools" / "flash"
sys.path.insert(0, str(FLASH))
import build_kit

MACHINE = platform.machine()
PYTHON_TAG = f"python{sys.version_info.major}.{sys.version_info.minor}"


# --- a kit with a stand-in hgen wheel ----------------------------------------------------------------------

AGENT_MODULE = '''import json, sys
MARK = {mark!r}
REFUSE = {refuse!r}
def main():
    print(json.dumps({{"mark": MARK, "args": sys.argv[1:]}}))
    if REFUSE and sys.argv[1:2] == ["check"] and sys.argv[-1].endswith(REFUSE):
        print("config refused", file=sys.stderr)
        sys.exit(2)
'''


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def fake_wheel(folder: Path, mark: str, refuse: str = "") -> Path:
    """hgen 0.1.0 (extra `edge`, no dependencies) whose `hgen-agent` prints `mark` and its arguments (and whose
    `check` exits 2 when the config's path ends with `refuse`, if given)."""
    info = "hgen-0.1.0.dist-info"
    files = {
        "hgen_fake_agent.py": AGENT_MODULE.format(mark=mark, refuse=refuse).encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: hgen\nVersion: 0.1.0\nProvides-Extra: edge\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[console_scripts]\nhgen-agent = hgen_fake_agent:main\n",
    }
    record = "\n".join([*(record_line(name, data) for name, data in files.items()), f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "hgen-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", record)
    return wheel


def make_kit(folder: Path, *, mark: str = "v1", secret: str = "secret-1", target: str | None = None,
             refuse: str = "") -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    fake_wheel(folder / "wheelhouse", mark, refuse)
    (folder / "bundle").mkdir()
    (folder / "bundle" / "model.hgb").write_text("bundle")
    (folder / "keys").mkdir()
    (folder / "keys" / "signing.pub").write_text("key")
    (folder / "keys" / "device.key").write_text("device key")
    config = {"device_id": "cam-7", "hub": {"url": "grpc://hub:50051", "secret": secret}}
    build_kit.write_private(folder / "agent.yaml", yaml.safe_dump(config))
    shutil.copy2(FLASH / "install.sh", folder / "install.sh")
    shutil.copy2(FLASH / "hgen-agent.service.in", folder / "hgen-agent.service.in")
    (folder / "TARGET").write_text(target or f"{MACHINE} {PYTHON_TAG}\n")
    (folder / "BUILD_INFO").write_text("commit: abc\ntree: clean\n")
    return folder


def install(kit: Path, prefix: Path, *args: str, path: str | None = None,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFIX": str(prefix), "PYTHON": sys.executable, "PIP_NO_INDEX": "1",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(extra_env or {})}
    env.pop("VIRTUAL_ENV", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["sh", str(kit / "install.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def installed_mark(prefix: Path) -> str:
    done = subprocess.run([str(prefix / "venv" / "bin" / "hgen-agent"), "run"], capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)["mark"]


# --- fault 1: the kit's agent.yaml is installed, the previous one kept ---------------------------------------

def test_reinstall_installs_the_kits_agent_yaml_and_keeps_a_backup(tmp_path: Path) -> None:
    prefix = tmp_path / "device"
    first = install(make_kit(tmp_path / "kit1", secret="old-secret"), prefix, "--no-systemd")
    assert first.returncode == 0, first.stderr
    (prefix / "var" / "outbox.sqlite").write_text("waiting samples")
    (prefix / "var" / "results.jsonl").write_text("{}\n")

    again = install(make_kit(tmp_path / "kit2", secret="rotated-secret"), prefix, "--no-systemd")
    assert again.returncode == 0, again.stderr
    config = prefix / "etc" / "agent.yaml"
    assert yaml.safe_load(config.read_text())["hub"]["secret"] == "rotated-secret"
    (backup,) = (prefix / "etc").glob("agent.yaml.bak-*")
    assert yaml.safe_load(backup.read_text())["hub"]["secret"] == "old-secret"
    assert f"the previous one is kept as {backup}" in again.stdout
    for private in (config, backup, prefix / "etc" / "keys" / "device.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert (prefix / "var" / "outbox.sqlite").read_text() == "waiting samples"  # state is kept
    assert (prefix / "var" / "results.jsonl").read_text() == "{}\n"


def test_reinstall_of_the_same_kit_makes_no_backup(tmp_path: Path) -> None:
    prefix, kit = tmp_path / "device", make_kit(tmp_path / "kit")
    assert install(kit, prefix, "--no-systemd").returncode == 0
    again = install(kit, prefix, "--no-systemd")
    assert again.returncode == 0, again.stderr
    assert "agent.yaml unchanged" in again.stdout and not list((prefix / "etc").glob("agent.yaml.bak-*"))


# --- fault 2: the kit's code replaces the installed one, even at the same version ---------------------------

def test_reinstall_replaces_the_code_of_the_same_version(tmp_path: Path) -> None:
    prefix = tmp_path / "device"
    assert install(make_kit(tmp_path / "kit1", mark="build-1"), prefix, "--no-systemd").returncode == 0
    assert installed_mark(prefix) == "build-1"
    again = install(make_kit(tmp_path / "kit2", mark="build-2"), prefix, "--no-systemd")
    assert again.returncode == 0, again.stderr
    assert installed_mark(prefix) == "build-2"
    assert '"mark": "build-2"' in again.stdout  # `hgen-agent check` ran the new code


def test_a_config_the_new_code_refuses_leaves_the_previous_code_and_config(tmp_path: Path) -> None:
    """The code was replaced in place before the kit's config was checked: a refused upgrade left the device on
    the new code with the old config (what a restart would then run). Now the new code is checked in a venv of its
    own and PREFIX/venv points at it only after both checks passed."""
    prefix = tmp_path / "device"
    assert install(make_kit(tmp_path / "kit1", mark="build-1", secret="old"), prefix, "--no-systemd").returncode == 0
    refused = install(make_kit(tmp_path / "kit2", mark="build-2", secret="new", refuse="agent.yaml"), prefix,
                      "--no-systemd")
    assert refused.returncode == 2 and "config refused" in refused.stderr
    assert installed_mark(prefix) == "build-1"
    assert yaml.safe_load((prefix / "etc" / "agent.yaml").read_text())["hub"]["secret"] == "old"
    assert [p.name for p in (prefix / "venvs").iterdir()] == [(prefix / "venv").resolve().name]  # new code gone


def test_a_config_refused_once_installed_puts_the_previous_config_back(tmp_path: Path) -> None:
    """The staged config passes, the installed one is refused: the previous agent.yaml, bundle and keys return,
    and the previous code still runs (config and code change together or not at all)."""
    prefix = tmp_path / "device"
    assert install(make_kit(tmp_path / "kit1", mark="build-1", secret="old"), prefix, "--no-systemd").returncode == 0
    (prefix / "etc" / "bundle" / "model.hgb").write_text("bundle 1")
    refused = install(make_kit(tmp_path / "kit2", mark="build-2", secret="new", refuse="/etc/agent.yaml"), prefix,
                      "--no-systemd")
    assert refused.returncode == 2
    assert installed_mark(prefix) == "build-1"
    assert yaml.safe_load((prefix / "etc" / "agent.yaml").read_text())["hub"]["secret"] == "old"
    assert (prefix / "etc" / "bundle" / "model.hgb").read_text() == "bundle 1"
    assert (prefix / "etc" / "keys" / "device.key").read_text() == "device key"
    assert not list(prefix.glob(".etc-new-*"))
    assert [p.name for p in (prefix / "venvs").iterdir()] == [(prefix / "venv").resolve().name]  # new code gone


def test_a_switch_that_fails_over_an_older_kits_venv_folder_puts_it_back(tmp_path: Path) -> None:
    """An older kit's PREFIX/venv is a real folder, moved aside for the link: a failure between the move and the
    link (a full disk, a signal, an mv without -T) left the device with no PREFIX/venv at all."""
    prefix = tmp_path / "device"
    assert install(make_kit(tmp_path / "kit1", mark="build-1"), prefix, "--no-systemd").returncode == 0
    (prefix / "venv").unlink()  # as an older kit left it: the code in a real PREFIX/venv folder
    next((prefix / "venvs").iterdir()).rename(prefix / "venv")
    (prefix / "venv" / "older-kit").write_text("")
    full_disk = stand_in(tmp_path / "bin", "ln",
                         'case "$*" in *venv.new*) echo "ln: No space left on device" >&2; exit 1 ;; esac')
    failed = install(make_kit(tmp_path / "kit2", mark="build-2"), prefix, "--no-systemd", path=full_disk)
    assert failed.returncode != 0 and "No space left" in failed.stderr
    assert (prefix / "venv").is_dir() and not (prefix / "venv").is_symlink()
    assert (prefix / "venv" / "older-kit").exists() and not (prefix / "venv.new").exists()
    assert not list((prefix / "venvs").iterdir())  # the new code gone, the old folder back in place


def test_upgrades_keep_the_running_code_and_the_one_before(tmp_path: Path) -> None:
    """A venv per install, PREFIX/venv a link to the running one; the previous stays for a manual roll back, older
    ones go. A PREFIX/venv folder of an older kit is kept as the previous code."""
    prefix = tmp_path / "device"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix / "venv")], check=True)
    (prefix / "venv" / "old-kit").write_text("")
    for n in (1, 2, 3):
        done = install(make_kit(tmp_path / f"kit{n}", mark=f"build-{n}"), prefix, "--no-systemd")
        assert done.returncode == 0, done.stderr
        assert installed_mark(prefix) == f"build-{n}" and (prefix / "venv").is_symlink()
        kept = sorted(p.name for p in (prefix / "venvs").iterdir())
        assert len(kept) == 2 and (prefix / "venv").resolve().name in kept
        assert any((prefix / "venvs" / name / "old-kit").exists() for name in kept) == (n == 1)


# --- faults 2 and 3 under systemd as root: stand-in commands record what the script decides --------------------

SHIM = '''#!/bin/sh
echo "{name} $*" >> "$SHIM_LOG"
{body}
'''
SHIMS = {
    # root installing; `id -u hgen` / `id -gn hgen` answer once useradd has run (a marker file)
    "id": '''case "$*" in
  -u) echo 0 ;;
  -un) echo root ;;
  "-u hgen"|"-gn hgen") [ -f "$SHIM_DIR/hgen-exists" ] || exit 1; [ "$1" = -u ] && echo 998 || echo hgen ;;
  *) exit 1 ;;
esac''',
    "useradd": 'touch "$SHIM_DIR/hgen-exists"',
    "chown": "exit 0",
    "getent": '[ "$*" = "group video" ] && echo "video:x:44:"',
    "runuser": 'shift 3; exec "$@"',  # runuser -u USER -- cmd...
    "systemctl": '[ "$1" = is-active ] && [ -f "$SHIM_DIR/active" ] && exit 0; [ "$1" = is-active ] && exit 3; exit 0',
}


def write_shims(folder: Path) -> None:
    folder.mkdir()
    for name, body in SHIMS.items():
        script = folder / name
        script.write_text(SHIM.format(name=name, body=body))
        script.chmod(0o755)


def root_install(kit: Path, prefix: Path, shims: Path, units: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = shims / "calls.log"
    log.unlink(missing_ok=True)
    units.mkdir(exist_ok=True)
    done = install(kit, prefix, path=str(shims) + ":" + os.environ["PATH"],
                   extra_env={"SHIM_LOG": str(log), "SHIM_DIR": str(shims), "UNIT_DIR": str(units)})
    return done, log.read_text().splitlines() if log.exists() else []


@pytest.fixture()
def shims(tmp_path: Path) -> Path:
    write_shims(tmp_path / "shims")
    return tmp_path / "shims"


def test_systemd_install_runs_as_a_dedicated_user_with_a_writable_state_folder(tmp_path: Path, shims: Path) -> None:
    prefix, units = tmp_path / "opt" / "hgen-agent", tmp_path / "units"
    done, calls = root_install(make_kit(tmp_path / "kit"), prefix, shims, units)
    assert done.returncode == 0, done.stdout + done.stderr
    useradd = [c for c in calls if c.startswith("useradd ")]
    assert useradd == [(f"useradd --system --no-create-home --home-dir {prefix}/var --shell /usr/sbin/nologin "
                        "--groups video hgen")]
    (stage,) = {c.split()[2].rsplit("/", 1)[0] for c in calls if c.startswith("chown root:hgen ")
                and c.endswith("/agent.yaml")}  # staged beside PREFIX/etc, then swapped in
    assert stage.startswith(f"{prefix}/.etc-new-") and not Path(stage).exists()
    assert f"chown root:hgen {stage}/keys/device.key" in calls  # secrets: root-owned, group hgen
    for private in (prefix / "etc" / "agent.yaml", prefix / "etc" / "keys" / "device.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o640, private
    assert f"chown -R hgen:hgen {prefix}/var" in calls
    checks = [c for c in calls if c.startswith("runuser ")]  # the staged config, then the installed one
    code = (prefix / "venv").resolve()  # both by the new code, before PREFIX/venv pointed at it
    assert code.parent == prefix / "venvs" and (prefix / "venv").is_symlink()
    assert checks == [f"runuser -u hgen -- {code}/bin/hgen-agent check --config {stage}/agent.yaml",
                      f"runuser -u hgen -- {code}/bin/hgen-agent check --config {prefix}/etc/agent.yaml"]
    unit = (units / "hgen-agent.service").read_text()
    assert "User=hgen\n" in unit and "User=root" not in unit
    assert f"ReadWritePaths={prefix}/var\n" in unit and f"WorkingDirectory={prefix}/var\n" in unit
    assert "systemctl enable hgen-agent.service" in calls and "systemctl start hgen-agent.service" in calls
    assert "systemctl restart hgen-agent.service" not in calls
    assert "started as hgen" in done.stdout


def test_systemd_upgrade_restarts_the_running_agent_on_the_new_code(tmp_path: Path, shims: Path) -> None:
    prefix, units = tmp_path / "opt" / "hgen-agent", tmp_path / "units"
    assert root_install(make_kit(tmp_path / "kit1", mark="build-1"), prefix, shims, units)[0].returncode == 0
    (shims / "active").touch()  # the agent now runs
    done, calls = root_install(make_kit(tmp_path / "kit2", mark="build-2"), prefix, shims, units)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemctl restart hgen-agent.service" in calls
    assert not [c for c in calls if c.startswith("useradd ")]  # the user exists now
    assert installed_mark(prefix) == "build-2"
    assert "restarted as hgen" in done.stdout


def test_an_upgrade_moves_the_old_layouts_state_into_var(tmp_path: Path, shims: Path) -> None:
    """Kits before PREFIX/var kept the outbox and bundle store in PREFIX/etc: moved, the record repointed."""
    prefix, units = tmp_path / "opt" / "hgen-agent", tmp_path / "units"
    etc = prefix / "etc"
    (etc / "bundles").mkdir(parents=True)
    (etc / "outbox.sqlite").write_text("waiting samples")
    (etc / "bundles" / "v2.hgb").write_text("downloaded")
    real = prefix.parent.resolve() / prefix.name
    (etc / "bundles" / "current.json").write_text(json.dumps({"path": f"{real}/etc/bundles/v2.hgb", "base": "x"}))
    (shims / "active").touch()
    done, calls = root_install(make_kit(tmp_path / "kit"), prefix, shims, units)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls.index("systemctl stop hgen-agent.service") < calls.index("systemctl restart hgen-agent.service")
    assert (prefix / "var" / "outbox.sqlite").read_text() == "waiting samples"
    assert not (etc / "outbox.sqlite").exists()
    record = json.loads((prefix / "var" / "bundles" / "current.json").read_text())
    assert record["path"] == f"{real}/var/bundles/v2.hgb"


def test_systemd_install_refuses_a_prefix_under_home(tmp_path: Path, shims: Path) -> None:
    done, _ = root_install(make_kit(tmp_path / "kit"), Path("/home/pi/hgen"), shims, tmp_path / "units")
    assert done.returncode == 1 and "ProtectHome" in done.stderr and len(done.stderr.splitlines()) == 1


# --- review 2, defect 1: a kit that is not complete, or a copy that fails, leaves PREFIX/etc as it was ------------

def installed_etc(prefix: Path) -> dict[str, str]:
    etc = prefix / "etc"
    return {str(p.relative_to(etc)): p.read_text() for p in sorted(etc.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("missing", ["BUILD_INFO", "keys", "keys/signing.pub", "agent.yaml", "bundle"])
def test_an_incomplete_kit_is_refused_before_anything_is_touched(tmp_path: Path, missing: str) -> None:
    prefix = tmp_path / "device"
    assert install(make_kit(tmp_path / "kit1", mark="build-1"), prefix, "--no-systemd").returncode == 0
    before = installed_etc(prefix)
    kit = make_kit(tmp_path / "kit2", mark="build-2", secret="rotated")
    target = kit / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()  # a build (or a copy of the kit) cut short
    done = install(kit, prefix, "--no-systemd")
    assert done.returncode == 1 and "is incomplete" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert installed_etc(prefix) == before and installed_mark(prefix) == "build-1"


def stand_in(folder: Path, name: str, body: str) -> str:
    """A PATH whose `name` runs `body` before the real command (`$REAL`)."""
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(f'#!/bin/sh\nREAL={shutil.which(name)}\n{body}\nexec "$REAL" "$@"\n')
    script.chmod(0o755)
    return str(folder) + ":" + os.environ["PATH"]


def upgrade_failing_in(tmp_path: Path, command: str, body: str
                       ) -> tuple[Path, dict[str, str], subprocess.CompletedProcess[str]]:
    """Install kit 1, then kit 2 with `command` standing in (`body` runs first): (prefix, etc/ before, the run)."""
    prefix = tmp_path / "device"
    assert install(make_kit(tmp_path / "kit1", mark="build-1"), prefix, "--no-systemd").returncode == 0
    before = installed_etc(prefix)
    done = install(make_kit(tmp_path / "kit2", mark="build-2", secret="rotated"), prefix, "--no-systemd",
                   path=stand_in(tmp_path / "bin", command, body))
    return prefix, before, done


def test_a_copy_that_fails_keeps_the_previous_bundle_and_keys(tmp_path: Path) -> None:
    prefix, before, done = upgrade_failing_in(
        tmp_path, "cp", 'case "$*" in *-R*/keys*) echo "cp: No space left on device" >&2; exit 1 ;; esac')
    assert done.returncode != 0 and "No space left on device" in done.stderr
    assert installed_etc(prefix) == before
    assert not list(prefix.glob(".etc-new-*"))  # the staging folder is cleaned up


def test_a_swap_that_fails_puts_the_previous_bundle_and_keys_back(tmp_path: Path) -> None:
    # the staged keys/ cannot be moved in (the previous bundle/ and keys/ are already moved aside)
    prefix, before, done = upgrade_failing_in(
        tmp_path, "mv", 'case "$*" in */.previous/*) ;; *.etc-new-*/keys" "*/etc/keys) exit 1 ;; esac')
    assert done.returncode != 0
    after = installed_etc(prefix)
    assert {name: text for name, text in after.items() if not name.startswith("agent.yaml.bak-")} == before
    assert not list(prefix.glob(".etc-new-*"))


# --- review 2, defect 2: a unit stopped to move old state is not left down --------------------------------------

def old_layout(prefix: Path, shims: Path) -> None:
    (prefix / "etc").mkdir(parents=True)
    (prefix / "etc" / "outbox.sqlite").write_text("waiting samples")
    (shims / "active").touch()


def test_a_config_the_agent_refuses_is_found_before_the_unit_is_stopped(tmp_path: Path, shims: Path) -> None:
    prefix, units = tmp_path / "opt" / "hgen-agent", tmp_path / "units"
    old_layout(prefix, shims)
    done, calls = root_install(make_kit(tmp_path / "kit", refuse="agent.yaml"), prefix, shims, units)
    assert done.returncode == 2 and "config refused" in done.stderr
    assert not [c for c in calls if c.startswith(("systemctl stop", "systemctl restart"))], calls
    assert (prefix / "etc" / "outbox.sqlite").read_text() == "waiting samples"  # nothing moved
    assert not (prefix / "etc" / "agent.yaml").exists() and not list(prefix.glob(".etc-new-*"))


def test_a_failure_after_stopping_the_unit_starts_it_again(tmp_path: Path, shims: Path) -> None:
    prefix, units = tmp_path / "opt" / "hgen-agent", tmp_path / "units"
    old_layout(prefix, shims)
    # the staged config passes; the installed one (after the stop, the move and the swap) is refused
    done, calls = root_install(make_kit(tmp_path / "kit", refuse="/etc/agent.yaml"), prefix, shims, units)
    assert done.returncode == 2
    systemctl = [c for c in calls if c.startswith("systemctl ")]
    assert systemctl[-2:] == ["systemctl stop hgen-agent.service", "systemctl start hgen-agent.service"], systemctl
    assert "the install failed after stopping hgen-agent.service: starting it again" in done.stderr


# --- review 2, defect 3: certificates readable by the agent's user -----------------------------------------------

def test_certificates_are_public_in_the_kit_and_once_installed(tmp_path: Path, shims: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in ("ca.pem", "dev.pem", "dev.key"):
        (pki / name).write_text(name)
        (pki / name).chmod(0o600)  # as kept on the build machine
    built = tmp_path / "built"
    (built / "keys").mkdir(parents=True)
    build_kit.copy_tls_files(built, {"ca_file": pki / "ca.pem", "cert_file": pki / "dev.pem",
                                     "key_file": pki / "dev.key"})
    modes = {n: stat.S_IMODE((built / "keys" / n).stat().st_mode) for n in ("ca.pem", "device.pem", "device.key")}
    assert modes == {"ca.pem": 0o644, "device.pem": 0o644, "device.key": 0o600}

    kit = make_kit(tmp_path / "kit")
    for name in ("ca.pem", "device.pem"):
        (kit / "keys" / name).write_text(name)
        (kit / "keys" / name).chmod(0o600)  # a kit from before, or copied with a restrictive umask
    (kit / "bundle" / "model.hgb").chmod(0o600)
    prefix = tmp_path / "opt" / "hgen-agent"
    done, _ = root_install(kit, prefix, shims, tmp_path / "units")
    assert done.returncode == 0, done.stdout + done.stderr
    etc = prefix / "etc"
    installed = {p: stat.S_IMODE((etc / p).stat().st_mode) for p in
                 ("keys/ca.pem", "keys/device.pem", "keys/signing.pub", "bundle/model.hgb", "keys/device.key",
                  "keys", "bundle")}
    assert installed == {"keys/ca.pem": 0o644, "keys/device.pem": 0o644, "keys/signing.pub": 0o644,
                         "bundle/model.hgb": 0o644, "keys/device.key": 0o640, "keys": 0o755, "bundle": 0o755}


# --- faults 3 and 7: the unit's text ------------------------------------------------------------------------

def test_unit_is_hardened_and_does_not_replay_a_finished_file_source() -> None:
    unit = (FLASH / "hgen-agent.service.in").read_text()
    settings = [line for line in unit.splitlines() if line and not line.startswith(("#", "["))]
    for line in ("User=@USER@", "Restart=on-failure", "RestartPreventExitStatus=2", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=@PREFIX@/var", "ProtectHome=yes", "PrivateTmp=yes",
                 "SupplementaryGroups=video"):
        assert line in settings, line
    assert "Restart=always" not in settings


# --- fault 7: TARGET and the device's Python ---------------------------------------------------------------

@pytest.mark.parametrize("target, says", [
    (f"riscv64 {PYTHON_TAG}", f"this kit is for riscv64, this device is {MACHINE}"),
    (f"{MACHINE} python3.9", f"this kit's wheels are for python3.9, {sys.executable} is {PYTHON_TAG}"),
])
def test_install_refuses_a_kit_for_another_machine_or_python(tmp_path: Path, target: str, says: str) -> None:
    prefix = tmp_path / "device"
    done = install(make_kit(tmp_path / "kit", target=target), prefix, "--no-systemd")
    assert done.returncode == 1
    assert says in done.stderr and len(done.stderr.splitlines()) == 1
    assert not prefix.exists()


# --- build_kit: faults 4, 5, 6, 7 (nothing here builds a wheel) ----------------------------------------------

@pytest.fixture()
def bundles(artifacts_dir: Path) -> dict[str, Path]:
    return cached_litert_bundles(artifacts_dir / "agent_bundles")


@pytest.fixture()
def no_wheel_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("build_kit started building before its inputs were checked")
    monkeypatch.setattr(build_kit, "build_hgen_wheel", refuse)


def operator_config(folder: Path, **extra: object) -> Path:
    config = folder / "operator.yaml"
    config.write_text(yaml.safe_dump({"device_id": "cam-7", "source": {"kind": "camera", "uri": "0"}, **extra}))
    return config


def previous_kit(folder: Path) -> Path:
    folder.mkdir()
    (folder / "TARGET").write_text("x86_64 python3.11\n")
    (folder / "agent.yaml").write_text("previous")
    return folder


def kit_args(bundles: dict[str, Path], config: Path, out: Path, *more: str) -> list[str]:
    return ["--target", "x86_64", "--bundle", str(bundles["v1"]), "--public-key", str(bundles["public_key"]),
            "--config", str(config), "--out", str(out), *more]


def test_out_that_holds_no_kit_is_refused(tmp_path: Path, bundles: dict[str, Path], no_wheel_build: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "important"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert build_kit.main(kit_args(bundles, operator_config(tmp_path), out)) == 2
    err = capsys.readouterr().err
    assert "is not empty and holds no kit (TARGET); empty it or pass --force" in err and len(err.splitlines()) == 1
    assert (out / "thesis.tex").read_text() == "years of work"


def test_out_may_be_replaced_when_it_is_a_previous_kit_or_with_force(tmp_path: Path) -> None:
    inputs = [tmp_path / "model.hgb"]
    build_kit.check_out(previous_kit(tmp_path / "kit"), inputs, force=False)
    build_kit.check_out(tmp_path / "missing", inputs, force=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    build_kit.check_out(other, inputs, force=True)
    with pytest.raises(build_kit.KitError, match="holds"):
        build_kit.check_out(tmp_path, inputs, force=True)  # the bundle itself would be deleted
    with pytest.raises(build_kit.KitError, match="holds"):
        build_kit.check_out(REPO, [], force=True)


@pytest.mark.parametrize("flag", ["--bundle", "--secret-file", "--public-key"])
def test_a_missing_input_is_one_line_and_out_is_untouched(tmp_path: Path, bundles: dict[str, Path], flag: str,
                                                          no_wheel_build: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = previous_kit(tmp_path / "kit")
    args = kit_args(bundles, operator_config(tmp_path), out)
    missing = str(tmp_path / "no-such-file")
    if flag in args:
        args[args.index(flag) + 1] = missing
    else:
        args += [flag, missing]
    assert build_kit.main(args) == 2
    err = capsys.readouterr().err
    assert missing in err and len(err.splitlines()) == 1, err
    assert (out / "agent.yaml").read_text() == "previous"


def test_a_misspelt_config_key_is_refused_before_building(tmp_path: Path, bundles: dict[str, Path],
                                                          no_wheel_build: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump({"device_id": "cam-7", "sorce": {"kind": "camera", "uri": "0"}}))
    out = previous_kit(tmp_path / "kit")
    assert build_kit.main(kit_args(bundles, config, out)) == 2
    err = capsys.readouterr().err
    assert "sorce: unknown key (did you mean 'source'?)" in err and len(err.splitlines()) == 1, err
    assert (out / "agent.yaml").read_text() == "previous"


def test_a_bundle_the_key_does_not_sign_is_refused(tmp_path: Path, bundles: dict[str, Path], no_wheel_build: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    other = make_keys(tmp_path / "other-keys")
    args = kit_args(bundles, operator_config(tmp_path), tmp_path / "kit")
    args[args.index("--public-key") + 1] = str(other.public_pem)
    assert build_kit.main(args) == 2
    err = capsys.readouterr().err
    assert "does not verify against" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "kit").exists()


def test_a_bundle_for_another_target_is_refused(tmp_path: Path, bundles: dict[str, Path], no_wheel_build: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    args = kit_args(bundles, operator_config(tmp_path, bundle={"expected_target": "x86_64"}), tmp_path / "kit")
    args[args.index("--bundle") + 1] = str(bundles["rpi4"])
    assert build_kit.main(args) == 2
    assert "does not verify against" in capsys.readouterr().err


def test_tls_files_go_into_the_kit_and_the_config_points_at_them(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    for name in ("ca.pem", "dev.pem", "dev.key"):
        (tmp_path / "pki" / name).write_text(name)
    config = operator_config(tmp_path, hub={"url": "mqtts://broker:8883", "tls": {
        "ca_file": "pki/ca.pem", "cert_file": "pki/dev.pem", "key_file": str(tmp_path / "pki" / "dev.key")}})
    data = build_kit.kit_config(config, "model.hgb")
    assert data["hub"]["tls"] == {"ca_file": "keys/ca.pem", "cert_file": "keys/device.pem",
                                  "key_file": "keys/device.key"}
    kit = tmp_path / "kit"
    (kit / "keys").mkdir(parents=True)
    build_kit.copy_tls_files(kit, build_kit.tls_sources(config))
    assert [(kit / "keys" / n).read_text() for n in ("ca.pem", "device.pem", "device.key")] == \
        ["ca.pem", "dev.pem", "dev.key"]
    assert stat.S_IMODE((kit / "keys" / "device.key").stat().st_mode) == 0o600


def test_a_missing_tls_ca_is_refused(tmp_path: Path, bundles: dict[str, Path], no_wheel_build: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = operator_config(tmp_path, hub={"url": "grpcs://hub:50051", "tls": {"ca_file": "ca.pem"}})
    assert build_kit.main(kit_args(bundles, config, tmp_path / "kit")) == 2
    assert f"hub.tls.ca_file of {config} {tmp_path / 'ca.pem'} does not exist" in capsys.readouterr().err


def test_state_paths_move_to_var_and_absolute_ones_stay(tmp_path: Path) -> None:
    config = operator_config(tmp_path, outbox={"path": "queue.sqlite"},
                             sinks=[{"kind": "jsonl", "path": "results.jsonl"},
                                    {"kind": "jsonl", "path": "/srv/results.jsonl"}])
    data = build_kit.kit_config(config, "model.hgb")
    assert data["outbox"]["path"] == "../var/queue.sqlite" and data["bundle"]["store_dir"] == "../var/bundles"
    assert [sink["path"] for sink in data["sinks"]] == ["../var/results.jsonl", "/srv/results.jsonl"]
    assert build_kit.kit_config(operator_config(tmp_path), "m.hgb")["outbox"]["path"] == "../var/outbox.sqlite"


def test_build_info_names_the_commit_and_a_dirty_tree() -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout
    info = yaml.safe_load(build_kit.build_info(build_kit.PLATFORMS["aarch64"]))
    assert info["commit"] == git("rev-parse", "HEAD").strip()
    assert info["tree"] == ("dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "clean")
    assert info["target"] == "aarch64 python3.11"


# --- review 2, defect 4: what the unit's sandbox refuses is refused when the kit is built -------------------------

@pytest.mark.parametrize("extra, says", [
    ({"outbox": {"path": "/var/lib/hgen/outbox.sqlite"}}, "outbox.path /var/lib/hgen/outbox.sqlite is absolute"),
    ({"bundle": {"store_dir": "/srv/bundles"}}, "bundle.store_dir /srv/bundles is absolute"),
    ({"sinks": [{"kind": "jsonl", "path": "/srv/results.jsonl"}]}, "sinks[0].path /srv/results.jsonl is absolute"),
    ({"outbox": {"path": "../../outbox.sqlite"}}, "leaves PREFIX/var"),
    ({"source": {"kind": "video", "uri": "/home/pi/clip.avi"}}, "source.uri /home/pi/clip.avi is under /home"),
    ({"adapt": {"variants": "/root/variants"}}, "adapt.variants /root/variants is under /root"),
    ({"adapt": {"power": {"kind": "trace", "path": "/run/user/1000/power.jsonl"}}}, "is under /run/user"),
])
def test_paths_the_unit_hides_or_may_not_write_are_refused(tmp_path: Path, bundles: dict[str, Path],
                                                           no_wheel_build: None, capsys: pytest.CaptureFixture[str],
                                                           extra: dict, says: str) -> None:
    out = previous_kit(tmp_path / "kit")
    assert build_kit.main(kit_args(bundles, operator_config(tmp_path, **extra), out)) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.splitlines()) == 1, err
    assert (out / "agent.yaml").read_text() == "previous"
    # a kit for `install.sh --no-systemd` may name them
    build_kit.preflight(out, bundles["v1"], bundles["public_key"], operator_config(tmp_path, **extra),
                        build_kit.DeviceCredentials(), force=False, systemd=False)
