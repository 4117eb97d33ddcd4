"""The aarch64 offline kit, built and installed for real: on this x86_64 machine the device is an arm64 Debian
Python 3.11 run by QEMU user emulation (tools/flash/arm64_sysroot.sh; no Raspberry Pi here), so the kit's
install.sh creates the venv, installs every wheel from the kit's wheelhouse with the index unreachable, runs
`hgen-agent check`, and the installed agent then processes a video through the aarch64 OpenCV and LiteRT wheels.

    sudo tools/flash/arm64_sysroot.sh /opt/hgen-arm64-root      # once (apt: arm64 Python, qemu-user-static)
    .venv/bin/python tools/bench/flash_aarch64.py [--sysroot /opt/hgen-arm64-root] [--frames 40]

Writes tools/bench/results/flash_aarch64.{json,md}. Timings are under emulation (one run each; no repeats): they
say the kit works, not how fast a Pi is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tools" / "flash"))
from benchlib import machine, markdown_table, write_results  # noqa: E402
from build_kit import build_kit  # noqa: E402

from hgen.compiler.testing import cached_litert_bundles  # noqa: E402
from hgen.edge_agent.testing import digits_28, write_video  # noqa: E402


def timed(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done, seconds


def device_env(sysroot: Path, prefix: Path) -> dict[str, str]:
    """QEMU finds arm64 libraries under the sysroot; pip can reach no index (PIP_INDEX_URL is a closed port)."""
    env = {**os.environ, "QEMU_LD_PREFIX": str(sysroot), "PREFIX": str(prefix),
           "PYTHON": str(sysroot / "usr" / "bin" / "python3.11"), "PIP_NO_INDEX": "1",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return env


def run(sysroot: Path, frames: int, work: Path) -> dict[str, Any]:
    if not (Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() and (sysroot / "usr/bin/python3.11").exists()):
        raise SystemExit(f"no arm64 sysroot at {sysroot} or qemu-aarch64 not registered: run "
                         f"`sudo tools/flash/arm64_sysroot.sh {sysroot}` first")
    bundles = cached_litert_bundles(REPO / "tests" / "artifacts" / "agent_bundles")
    images, _ = digits_28(frames)
    video = write_video(work / "field.avi", frames, images=images)
    config = work / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "pi-1", "source": {"kind": "video", "uri": str(video)}, "bundle": {"expected_target": "rpi4"},
        "gate": {"tau": 0.9}, "sinks": [{"kind": "jsonl", "path": "results.jsonl"}]}))
    start = time.perf_counter()
    kit = build_kit(work / "kit", "aarch64", bundles["rpi4"], bundles["public_key"], config)
    build_seconds = time.perf_counter() - start
    wheels = sorted(p.name for p in (kit / "wheelhouse").glob("*.whl"))
    prefix = work / "device"
    env = device_env(sysroot, prefix)
    install, install_seconds = timed([str(kit / "install.sh"), "--no-systemd"], env, work, 1800)
    agent = prefix / "venv" / "bin" / "hgen-agent"
    ran, run_seconds = timed([str(agent), "run", "--config", str(prefix / "etc" / "agent.yaml"), "--log-level",
                              "WARNING"], env, work, 900)
    state = prefix / "var"  # the kit writes state (the jsonl sink's results) to PREFIX/var
    results = [json.loads(line) for line in (state / "results.jsonl").read_text().splitlines()]
    probe, _ = timed([str(prefix / "venv" / "bin" / "python"), "-c", "import platform, cv2, numpy, ai_edge_litert; "
                      "print(platform.machine(), cv2.__version__, numpy.__version__)"], env, work, 300)
    listing, _ = timed([str(prefix / "venv" / "bin" / "python"), "-m", "pip", "list", "--format=json"], env, work, 600)
    installed = sorted(p["name"].lower() for p in json.loads(listing.stdout))
    return {"target": "aarch64", "bundle_target": "rpi4", "wheels": wheels, "wheel_count": len(wheels),
            "kit_mb": sum(p.stat().st_size for p in kit.rglob("*") if p.is_file()) / 1e6,
            "build_seconds": build_seconds, "install_seconds_emulated": install_seconds,
            "agent_run_seconds_emulated": run_seconds, "frames": frames,
            "frames_with_results": len({r["frame_index"] for r in results}),
            "device_python": probe.stdout.strip(), "check_output": install.stdout.strip().splitlines()[-2:],
            "agent_summary": json.loads(ran.stdout.strip().splitlines()[-1]),
            "tensorflow_installed": any(n.startswith(("tensorflow", "keras")) for n in installed),
            "installed": installed}


def markdown(data: dict[str, Any]) -> str:
    m = machine()
    rows = [{"measure": k, "value": data[k]} for k in (
        "wheel_count", "kit_mb", "build_seconds", "install_seconds_emulated", "agent_run_seconds_emulated", "frames",
        "frames_with_results", "device_python", "tensorflow_installed")]
    return "\n".join([
        "# aarch64 offline kit: built, installed and run (device emulated with QEMU)", "",
        f"Host: {m['cpu']}, {m['cores']} cores, {m['os']}. Device: Debian arm64 Python 3.11 under qemu-aarch64 user "
        "emulation (no Raspberry Pi on this machine). One run; emulated timings say the kit works, not how fast a Pi "
        "is. install.sh ran with PIP_NO_INDEX and the index pointed at a closed port.", "",
        markdown_table(rows, ["measure", "value"]), "",
        "The kit pins ai-edge-litert 1.4.0 for aarch64: 2.3.0 (the x86-64 pin) crashed in `Interpreter()` under "
        "QEMU 7.2 with cortex-a72, cortex-a57 and max CPUs, on this model and with the default delegates off; "
        "1.4.0 runs. Whether 2.3.0 runs on a real Pi is unchecked (no device here).", "",
        "Wheelhouse: " + ", ".join(data["wheels"]), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sysroot", type=Path, default=Path("/opt/hgen-arm64-root"))
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hgen-flash-aarch64-") as tmp:
        data = run(args.sysroot, args.frames, Path(tmp))
    json_path, md_path = write_results("flash_aarch64", data, markdown(data))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0 if data["frames_with_results"] == data["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
