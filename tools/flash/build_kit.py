"""Build an offline install kit for an edge device: wheelhouse + bundle + key + config + systemd unit + installer.

    python tools/flash/build_kit.py --target aarch64 --bundle model.hgb --public-key signing.pub \
        --config agent.yaml --secret-file cam-7.secret --out kit-rpi4/

`--secret-file` holds the device's secret as `hgen-hub add-device` printed it (a file, so it stays out of shell
history); the kit writes it into agent.yaml as `hub.secret` and that file is mode 0600, in the kit and once
installed. `--client-cert/--client-key` add a mutual-TLS certificate (its name: the device id) the same way.

The wheelhouse holds the `hgen` wheel (built from this checkout) and every dependency of its `edge` extra for
the target platform (`pip download --platform ... --only-binary=:all:`), pinned by constraints.txt, so the
device installs with `pip install --no-index --find-links wheelhouse` and never reaches an index.

Nothing is built (and --out is not touched) until the inputs are checked: the files exist, the kit's agent.yaml
passes the agent's own config model, and the bundle verifies against --public-key; a problem is one line on stderr
and exit status 2. --out is replaced only when it is empty, holds a previous kit (its TARGET file) or --force is
given. hub.tls files (CA, client certificate and key) are copied into keys/ (certificates 0644, the key 0600);
relative state paths (the outbox, the bundle store, jsonl sinks) are moved under ../var (PREFIX/var on the device,
the one folder the agent's user may write). For the systemd unit (the default; --no-systemd: a kit only for
`install.sh --no-systemd`), paths the unit's sandbox would refuse are refused here, as `hgen-agent check` at install
time runs outside it: absolute state paths (only PREFIX/var is writable; relative ones land there) and any path
under /home, /root or /run/user (ProtectHome=yes). BUILD_INFO records the git commit the kit was built from
("dirty": uncommitted changes); it is written last, and install.sh refuses a kit without it (a build cut short).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KIT_MARKER = "TARGET"  # written first into every kit: a folder holding it is a previous kit --out may replace
STATE_DIR = "../var"  # relative to agent.yaml (PREFIX/etc): PREFIX/var, writable by the agent's user
HIDDEN_BY_UNIT = ("/home", "/root", "/run/user")  # ProtectHome=yes in hgen-agent.service.in
TLS_FILES = {"ca_file": "keys/ca.pem", "cert_file": "keys/device.pem", "key_file": "keys/device.key"}
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "tests", "__pycache__",
                                     ".pytest_cache", "tools")


@dataclass(frozen=True)
class Platform:
    """pip platform tags of a target (manylinux tags newest first) and the Python it runs."""

    machine: str
    tags: tuple[str, ...]
    python_version: str = "3.11"
    pins: tuple[str, ...] = ()  # constraints.txt lines replaced for this target (with the reason beside them)


PLATFORMS = {
    "x86_64": Platform("x86_64", ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                                  "manylinux2014_x86_64", "linux_x86_64")),
    # ai-edge-litert 2.3.0's aarch64 wheel crashes in Interpreter() under QEMU 7.2 user emulation (cortex-a72,
    # cortex-a57 and max CPUs); 1.4.0 runs there (tools/bench/flash_aarch64.py). No Pi here to check 2.3.0 on.
    "aarch64": Platform("aarch64", ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                                    "manylinux2014_aarch64", "linux_aarch64"), pins=("ai-edge-litert==1.4.0",)),
}


def run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")


def build_hgen_wheel(wheelhouse: Path) -> Path:
    """Build the hgen wheel from a clean copy of the sources (no build files left in the checkout)."""
    with tempfile.TemporaryDirectory(prefix="hgen-src-") as tmp:
        source = Path(tmp) / "hgen"
        shutil.copytree(REPO, source, ignore=COPY_IGNORE)
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
             str(wheelhouse), str(source)])
    (wheel,) = wheelhouse.glob("hgen-*.whl")
    return wheel


def target_constraints(constraints: Path, platform: Platform, folder: Path) -> Path:
    """constraints.txt with the target's own pins in place of the project-wide ones."""
    if not platform.pins:
        return constraints
    names = {pin.split("==")[0].lower() for pin in platform.pins}
    kept = [line for line in constraints.read_text().splitlines()
            if line.split("==")[0].strip().lower() not in names]
    path = folder / f"constraints-{platform.machine}.txt"
    path.write_text("\n".join([*kept, *platform.pins]) + "\n")
    return path


def download_dependencies(wheel: Path, wheelhouse: Path, platform: Platform, constraints: Path | None) -> None:
    args = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", platform.python_version, "-d", str(wheelhouse)]
    for tag in platform.tags:
        args += ["--platform", tag]
    with tempfile.TemporaryDirectory(prefix="hgen-kit-") as tmp:
        if constraints is not None:
            args += ["-c", str(target_constraints(constraints, platform, Path(tmp)))]
        run(args + [f"hgen[edge] @ {wheel.resolve().as_uri()}"])


class KitError(Exception):
    """A problem with build_kit's inputs or --out, found before anything is built: one line, exit status 2."""


@dataclass(frozen=True)
class DeviceCredentials:
    """What proves the device to the hub: its secret and, optionally, a client certificate and key (PEM)."""

    secret: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def read_operator_config(config_path: Path) -> dict[str, Any]:
    from hgen.edge_agent.errors import AgentConfigError
    from hgen.runtime.config import read_config_mapping

    try:
        return read_config_mapping(config_path, error=AgentConfigError)
    except AgentConfigError as exc:
        raise KitError(one_line(str(exc))) from None


def tls_sources(config_path: Path, credentials: DeviceCredentials = DeviceCredentials()) -> dict[str, Path]:
    """hub.tls files to copy into the kit, by key: the operator's (relative: to the config's folder), with
    --client-cert/--client-key in place of the config's cert_file/key_file."""
    tls = (read_operator_config(config_path).get("hub") or {}).get("tls") or {}
    sources = {key: config_path.resolve().parent / str(tls[key]) for key in TLS_FILES if tls.get(key)}
    if credentials.cert_file is not None and credentials.key_file is not None:
        sources.update(cert_file=credentials.cert_file, key_file=credentials.key_file)
    return sources


def in_state_dir(path: Any) -> str:
    """A relative state path moved under STATE_DIR; an absolute one kept (the operator chose it)."""
    return str(path) if Path(str(path)).is_absolute() else f"{STATE_DIR}/{path}"


def move_state(data: dict[str, Any]) -> None:
    """Outbox, bundle store and jsonl sinks under STATE_DIR: PREFIX/etc stays read-only for the agent."""
    data["bundle"]["store_dir"] = in_state_dir(data["bundle"].get("store_dir", "bundles"))
    outbox = data.setdefault("outbox", {})
    outbox["path"] = in_state_dir(outbox.get("path", "outbox.sqlite"))
    for sink in data.get("sinks") or ():
        if isinstance(sink, dict) and sink.get("kind") == "jsonl" and sink.get("path"):
            sink["path"] = in_state_dir(sink["path"])


def state_paths(data: dict[str, Any]) -> dict[str, str]:
    """The state paths of a config (as move_state left them), by their agent.yaml name."""
    paths = {"bundle.store_dir": str((data.get("bundle") or {}).get("store_dir", "bundles")),
             "outbox.path": str((data.get("outbox") or {}).get("path", "outbox.sqlite"))}
    for index, sink in enumerate(data.get("sinks") or ()):
        if isinstance(sink, dict) and sink.get("kind") == "jsonl" and sink.get("path"):
            paths[f"sinks[{index}].path"] = str(sink["path"])
    return paths


def read_paths(data: dict[str, Any]) -> dict[str, str]:
    """The configured files and folders the agent reads that the kit does not bring: the source (a file or
    folder, not a URL or a camera index), the variant set, the power trace or sysfs folder, meminfo."""
    paths = {}
    uri = str((data.get("source") or {}).get("uri", ""))
    if uri and "://" not in uri and not uri.isdigit():
        paths["source.uri"] = uri
    adapt = data.get("adapt") or {}
    for name, value in (("adapt.variants", adapt.get("variants")),
                        ("adapt.power.path", (adapt.get("power") or {}).get("path")),
                        ("adapt.meminfo", adapt.get("meminfo"))):
        if value:
            paths[name] = str(value)
    return paths


def hidden_by_unit(path: str) -> str | None:
    """The folder of HIDDEN_BY_UNIT that holds `path`, if any."""
    return next((top for top in HIDDEN_BY_UNIT if path == top or path.startswith(top + "/")), None)


def check_unit_sandbox(data: dict[str, Any]) -> None:
    """What the unit (ProtectSystem=strict, ReadWritePaths=PREFIX/var, ProtectHome=yes) would refuse at start,
    while `hgen-agent check` at install time, outside the unit, passes it. PREFIX is the device's choice, not
    known here: an absolute state path is refused, relative ones are placed in PREFIX/var."""
    for name, path in state_paths(data).items():
        if Path(path).is_absolute():
            raise KitError(f"{name} {path} is absolute: the agent's unit may write only PREFIX/var; give a relative "
                           f"path (it is placed in PREFIX/var), or pass --no-systemd")
        if ".." in Path(path).parts[len(Path(STATE_DIR).parts):]:
            raise KitError(f"{name} {path} leaves PREFIX/var, the only folder the agent's unit may write")
    for name, path in read_paths(data).items():
        top = hidden_by_unit(path)
        if top is not None:
            raise KitError(f"{name} {path} is under {top}, which the agent's unit hides (ProtectHome=yes): move it "
                           f"(e.g. to /srv), or pass --no-systemd")


def kit_config(config_path: Path, bundle_name: str, credentials: DeviceCredentials = DeviceCredentials()) -> dict:
    """The operator's config with the kit's own bundle, key, TLS files, device credentials and state folder
    (relative paths: resolved against the installed file)."""
    data = read_operator_config(config_path)
    data.setdefault("bundle", {})
    data["bundle"].update(path=f"bundle/{bundle_name}", public_key="keys/signing.pub")
    move_state(data)
    hub = data.setdefault("hub", {})
    if credentials.secret is not None:
        hub["secret"] = credentials.secret
    sources = tls_sources(config_path, credentials)
    if sources:
        hub["tls"] = {**(hub.get("tls") or {}), **{key: TLS_FILES[key] for key in sources}}
    return data


def write_private(path: Path, text: str) -> None:
    """Created 0600 from the start: the secret is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def copy_public(source: Path, target: Path) -> None:
    """A certificate or public key, 0644 whatever the source's mode: the agent's user reads it on the device."""
    shutil.copyfile(source, target)
    target.chmod(0o644)


def copy_tls_files(kit: Path, sources: dict[str, Path]) -> None:
    """The CA and client certificate 0644, the client key 0600."""
    for key, source in sources.items():
        target = kit / TLS_FILES[key]
        if key == "key_file":
            write_private(target, source.read_text())
        else:
            copy_public(source, target)


def copy_credentials(keys: Path, credentials: DeviceCredentials) -> None:
    """--client-cert/--client-key into keys/ (kept for callers that pass only the credentials)."""
    if credentials.cert_file is not None and credentials.key_file is not None:
        copy_tls_files(keys.parent, {"cert_file": credentials.cert_file, "key_file": credentials.key_file})


def one_line(text: str) -> str:
    """A multi-line error ("invalid config:" then a line per problem) as one line."""
    head, *rest = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    return f"{head} {'; '.join(rest)}" if head.endswith(":") and rest else "; ".join([head, *rest])


def check_files_exist(named: dict[str, Path | None]) -> None:
    for name, path in named.items():
        if path is not None and not path.exists():
            raise KitError(f"{name} {path} does not exist")


def check_config(data: dict[str, Any], config_path: Path) -> None:
    """The kit's agent.yaml through the agent's own model: a misspelt key fails here, not on the device."""
    from hgen.edge_agent.config import parse_agent_config
    from hgen.edge_agent.errors import AgentConfigError

    try:
        parse_agent_config(data, source=f"agent config {config_path}")
    except AgentConfigError as exc:
        raise KitError(one_line(str(exc))) from None


def check_bundle(bundle: Path, public_key: Path, expected_target: str | None) -> None:
    """Signature, target and hashes, as the device's loader will check them."""
    from hgen.runtime.bundle.loader import verify_archive, verify_directory
    from hgen.runtime.errors import HGenError
    from hgen.runtime.signing import load_public_key

    try:
        key = load_public_key(public_key)
        if bundle.is_dir():
            verify_directory(bundle, key, expected_target)
        else:
            with tempfile.TemporaryDirectory(prefix="hgen-kit-verify-") as tmp:
                verify_archive(bundle, key, expected_target, Path(tmp))
    except HGenError as exc:
        raise KitError(f"bundle {bundle} does not verify against {public_key}: {one_line(str(exc))}") from None


def is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_out(out: Path, inputs: Iterable[Path], force: bool) -> None:
    """--out is replaced only when it is missing, empty, a previous kit (KIT_MARKER) or --force is given; never
    when it holds an input or this checkout."""
    if out.exists() and not out.is_dir():
        raise KitError(f"--out {out} is a file, not a folder")
    for path in (*inputs, REPO):
        if is_within(path, out):
            raise KitError(f"--out {out} holds {path}: choose another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / KIT_MARKER).is_file() and not force:
        raise KitError(f"--out {out} is not empty and holds no kit ({KIT_MARKER}); empty it or pass --force")


def preflight(out: Path, bundle: Path, public_key: Path, config: Path, credentials: DeviceCredentials,
              force: bool, systemd: bool = True) -> dict[str, Any]:
    """Everything that can be wrong with the inputs, before --out is touched; returns the kit's agent.yaml."""
    check_files_exist({"--bundle": bundle, "--public-key": public_key, "--config": config,
                       "--client-cert": credentials.cert_file, "--client-key": credentials.key_file})
    check_files_exist({f"hub.tls.{key} of {config}": path for key, path in tls_sources(config, credentials).items()})
    data = kit_config(config, bundle.name, credentials)
    check_config(data, config)
    if systemd:
        check_unit_sandbox(data)
    check_bundle(bundle, public_key, data["bundle"].get("expected_target"))
    check_out(out, [bundle, public_key, config, *tls_sources(config, credentials).values()], force)
    return data


def git_output(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build_info(platform: Platform) -> str:
    """What the kit was built from: the commit, "dirty" when the checkout has uncommitted changes."""
    commit = git_output("rev-parse", "HEAD")
    status = git_output("status", "--porcelain", "--untracked-files=no")
    state = "unknown" if commit is None else ("dirty" if status else "clean")
    built = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"commit: {commit or 'unknown (not a git checkout)'}\ntree: {state}\nbuilt: {built}\n"
            f"target: {platform.machine} python{platform.python_version}\n")


def build_kit(out: Path, target: str, bundle: Path, public_key: Path, config: Path,
              constraints: Path | None = REPO / "constraints.txt",
              credentials: DeviceCredentials = DeviceCredentials(), force: bool = False,
              systemd: bool = True) -> Path:
    """Check the inputs (KitError), then build the kit into `out` (BUILD_INFO last: the kit is complete)."""
    platform = PLATFORMS[target]
    data = preflight(out, bundle, public_key, config, credentials, force, systemd)
    if out.exists():
        shutil.rmtree(out)
    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    # first: a build cut short leaves a folder the next build may replace; install.sh reads it too
    (out / KIT_MARKER).write_text(f"{platform.machine} python{platform.python_version}\n")
    wheel = build_hgen_wheel(wheelhouse)
    download_dependencies(wheel, wheelhouse, platform, constraints)
    (out / "bundle").mkdir()
    copy = shutil.copytree if bundle.is_dir() else shutil.copy2
    copy(bundle, out / "bundle" / bundle.name)
    (out / "keys").mkdir()
    copy_public(public_key, out / "keys" / "signing.pub")
    copy_tls_files(out, tls_sources(config, credentials))
    write_private(out / "agent.yaml", yaml.safe_dump(data, sort_keys=False))
    shutil.copy2(HERE / "hgen-agent.service.in", out / "hgen-agent.service.in")
    shutil.copy2(HERE / "install.sh", out / "install.sh")
    (out / "install.sh").chmod(0o755)
    (out / "BUILD_INFO").write_text(build_info(platform))  # last: install.sh refuses a kit without it
    return out


def read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise KitError(f"--secret-file {path}: {exc.strerror or exc}") from None
    if not secret:
        raise KitError(f"--secret-file {path} is empty")
    return secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(PLATFORMS), required=True)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory or .hgb archive")
    parser.add_argument("--public-key", type=Path, required=True, help="trusted signing.pub")
    parser.add_argument("--config", type=Path, required=True, help="agent.yaml for the device")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-constraints", action="store_true", help="do not pin with constraints.txt")
    parser.add_argument("--secret-file", type=Path, help="the device's secret from `hgen-hub add-device`")
    parser.add_argument("--client-cert", type=Path, help="client certificate (PEM) named by the device id")
    parser.add_argument("--client-key", type=Path, help="private key (PEM) of --client-cert")
    parser.add_argument("--force", action="store_true", help="replace --out even when it holds no previous kit")
    parser.add_argument("--no-systemd", action="store_true",
                        help="a kit for `install.sh --no-systemd` only: allow absolute state paths and paths under "
                             "/home, /root, /run/user (the systemd unit refuses them)")
    args = parser.parse_args(argv)
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")
    try:
        kit = build_kit(args.out, args.target, args.bundle, args.public_key, args.config,
                        None if args.no_constraints else REPO / "constraints.txt",
                        DeviceCredentials(read_secret(args.secret_file), args.client_cert, args.client_key),
                        force=args.force, systemd=not args.no_systemd)
    except KitError as exc:
        print(f"build_kit: {exc}", file=sys.stderr)
        return 2
    print(f"kit for {args.target} in {kit}: {len(list((kit / 'wheelhouse').glob('*.whl')))} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
