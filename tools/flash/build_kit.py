"""Build an offline install kit for an edge device: wheelhouse + bundle + key + config + systemd unit + installer.

    python tools/flash/build_kit.py --target aarch64 --bundle model.hgb --public-key signing.pub \
        --config agent.yaml --out kit-rpi4/

The wheelhouse holds the `hgen` wheel (built from this checkout) and every dependency of its `edge` extra for
the target platform (`pip download --platform ... --only-binary=:all:`), pinned by constraints.txt, so the
device installs with `pip install --no-index --find-links wheelhouse` and never reaches an index.
"""

from __future__ import annotations

import argparse
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


def kit_config(config_path: Path, bundle_name: str) -> dict:
    """The operator's config with the kit's own bundle and key (relative: resolved against the installed file)."""
    data = yaml.safe_load(config_path.read_text()) or {}
    data.setdefault("bundle", {})
    data["bundle"].update(path=f"bundle/{bundle_name}", public_key="keys/signing.pub")
    return data


def build_kit(out: Path, target: str, bundle: Path, public_key: Path, config: Path,
              constraints: Path | None = REPO / "constraints.txt") -> Path:
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
    (out / "agent.yaml").write_text(yaml.safe_dump(kit_config(config, bundle.name), sort_keys=False))
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
    args = parser.parse_args(argv)
    kit = build_kit(args.out, args.target, args.bundle, args.public_key, args.config,
                    None if args.no_constraints else REPO / "constraints.txt")
    print(f"kit for {args.target} in {kit}: {len(list((kit / 'wheelhouse').glob('*.whl')))} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
