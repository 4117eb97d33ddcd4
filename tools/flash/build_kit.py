"""Build an offline install kit for an edge device: wheelhouse + bundle + key + config + systemd unit + installer.

    python tools/flash/build_kit.py --target aarch64 --bundle model.hgb --public-key signing.pub \
        --config agent.yaml --secret-file cam-7.secret --out kit-rpi4/

`--secret-file` holds the device's secret as `hgen-hub add-device` printed it (a file, so it stays out of shell
history); the kit writes it into agent.yaml as `hub.secret` and that file is mode 0600, in the kit and once
installed. `--client-cert/--client-key` add a mutual-TLS certificate (its name: the device id) the same way.

The wheelhouse holds the `hgen` wheel (built from this checkout) and every dependency of its `edge` extra for
the target platform (`pip download --platform ... --only-binary=:all:`), pinned by constraints.txt, so the
device installs with `pip install --no-index --find-links wheelhouse` and never reaches an index.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
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
    done = subprocess.run(args, capture_output=True, text=True)
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


@dataclass(frozen=True)
class DeviceCredentials:
    """What proves the device to the hub: its secret and, optionally, a client certificate and key (PEM)."""

    secret: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def kit_config(config_path: Path, bundle_name: str, credentials: DeviceCredentials = DeviceCredentials()) -> dict:
    """The operator's config with the kit's own bundle, key and device credentials (relative paths: resolved
    against the installed file)."""
    data = yaml.safe_load(config_path.read_text()) or {}
    data.setdefault("bundle", {})
    data["bundle"].update(path=f"bundle/{bundle_name}", public_key="keys/signing.pub")
    hub = data.setdefault("hub", {})
    if credentials.secret is not None:
        hub["secret"] = credentials.secret
    if credentials.cert_file is not None:
        hub.setdefault("tls", {}).update(cert_file="keys/device.pem", key_file="keys/device.key")
    return data


def write_private(path: Path, text: str) -> None:
    """Created 0600 from the start: the secret is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def copy_credentials(keys: Path, credentials: DeviceCredentials) -> None:
    if credentials.cert_file is not None and credentials.key_file is not None:
        shutil.copy2(credentials.cert_file, keys / "device.pem")
        write_private(keys / "device.key", credentials.key_file.read_text())


def build_kit(out: Path, target: str, bundle: Path, public_key: Path, config: Path,
              constraints: Path | None = REPO / "constraints.txt",
              credentials: DeviceCredentials = DeviceCredentials()) -> Path:
    platform = PLATFORMS[target]
    if out.exists():
        shutil.rmtree(out)
    wheelhouse = out / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    wheel = build_hgen_wheel(wheelhouse)
    download_dependencies(wheel, wheelhouse, platform, constraints)
    (out / "bundle").mkdir()
    copy = shutil.copytree if bundle.is_dir() else shutil.copy2
    copy(bundle, out / "bundle" / bundle.name)
    (out / "keys").mkdir()
    shutil.copy2(public_key, out / "keys" / "signing.pub")
    copy_credentials(out / "keys", credentials)
    write_private(out / "agent.yaml", yaml.safe_dump(kit_config(config, bundle.name, credentials), sort_keys=False))
    shutil.copy2(HERE / "hgen-agent.service.in", out / "hgen-agent.service.in")
    shutil.copy2(HERE / "install.sh", out / "install.sh")
    (out / "install.sh").chmod(0o755)
    (out / "TARGET").write_text(f"{platform.machine} python{platform.python_version}\n")
    return out


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
    args = parser.parse_args(argv)
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together")
    secret = args.secret_file.read_text().strip() if args.secret_file else None
    kit = build_kit(args.out, args.target, args.bundle, args.public_key, args.config,
                    None if args.no_constraints else REPO / "constraints.txt",
                    DeviceCredentials(secret, args.client_cert, args.client_key))
    print(f"kit for {args.target} in {kit}: {len(list((kit / 'wheelhouse').glob('*.whl')))} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
