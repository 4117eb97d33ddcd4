"""tools/flash: build the x86_64 offline kit, install it into a fresh venv with the package index unreachable,
and start the agent from the installed console script on a video file (written with OpenCV; no camera here).

The kit build downloads the `edge` wheels from PyPI through pip (pip's cache makes reruns fast); the install
itself is offline (`--no-index`, and PIP_INDEX_URL points at a closed port to prove nothing is fetched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hgen.compiler.testing import cached_litert_bundles
from hgen.edge_agent.testing import digits_28, write_video

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "flash"))
from build_kit import build_kit  # noqa: E402

# What pip prints when it cannot reach the package index (urllib3's connection errors); any other failure of the
# kit build (a bad pin, a broken wheel build) is a failure of the test, not a missing prerequisite.
NO_ROUTE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
            "Network is unreachable", "ConnectTimeoutError", "ProxyError")


def index_unreachable(exc: SystemExit) -> bool:
    """build_kit's SystemExit names the failed command: only `pip download` failing on the network is a skip."""
    text = str(exc.code)
    return "pip download" in text and any(sign in text for sign in NO_ROUTE)


def test_x86_64_kit_installs_offline_and_runs_on_a_video(tmp_path, artifacts_dir) -> None:
    bundles = cached_litert_bundles(artifacts_dir / "agent_bundles")
    images, _ = digits_28(40)
    video = write_video(tmp_path / "field.avi", 40, images=images)
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "device_id": "pi-7", "source": {"kind": "video", "uri": str(video)},
        "bundle": {"expected_target": "x86_64"}, "gate": {"tau": 0.9},
        "sinks": [{"kind": "jsonl", "path": "results.jsonl"}]}))
    try:
        kit = build_kit(tmp_path / "kit", "x86_64", bundles["v1"], bundles["public_key"], config)
    except SystemExit as exc:
        if not index_unreachable(exc):
            pytest.fail(f"building the kit failed: {str(exc.code)[-3000:]}")
        pytest.skip(f"no route to PyPI, cannot download the edge wheels: {str(exc.code)[-300:]}")
    wheels = {p.name.split("-")[0].lower() for p in (kit / "wheelhouse").glob("*.whl")}
    assert {"hgen", "ai_edge_litert", "opencv_python_headless", "grpcio", "paho_mqtt"} <= wheels
    assert not any(name.startswith(("tensorflow", "keras")) for name in wheels)

    prefix = tmp_path / "device"
    env = {**os.environ, "PREFIX": str(prefix), "PYTHON": sys.executable, "PIP_NO_INDEX": "1",
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run([str(kit / "install.sh"), "--no-systemd"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert '"bundle": "lenet5-digits 0.1.0"' in install.stdout  # `hgen-agent check` ran in the installed venv
    assert (kit / "BUILD_INFO").read_text().startswith("commit: ")

    run = subprocess.run([str(prefix / "venv" / "bin" / "hgen-agent"), "run", "--config",
                          str(prefix / "etc" / "agent.yaml"), "--log-level", "WARNING"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["frames"] == 40
    lines = (prefix / "var" / "results.jsonl").read_text().splitlines()  # state lives in PREFIX/var
    assert sorted(json.loads(line)["frame_index"] for line in lines) == list(range(40))
    freeze = subprocess.run([str(prefix / "venv" / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, timeout=60)
    installed = {p["name"].lower() for p in json.loads(freeze.stdout)}
    assert "tensorflow" not in installed and "ai-edge-litert" in installed
