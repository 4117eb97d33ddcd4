"""The phone app (`android_bridge/`) for tests and benchmarks: where its build is, and a typed error when it is not.

`make test` runs `npm ci` and `npm run build` before the tests (no network at test time); a test that finds no
build skips naming that command (and fails under CI=true, as every missing prerequisite does).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hgen.hub.errors import HubError

APP_DIR = Path(__file__).resolve().parents[2] / "android_bridge"
DIST = APP_DIR / "dist"
BUILD_COMMAND = "make android-bridge (npm ci && npm run build in android_bridge/)"


class PhoneAppMissingError(HubError):
    """The device page's build or node is missing."""


def built_app() -> Path:
    """The build directory with the page's script and wasm, and the node tests."""
    if not (DIST / "static" / "device.js").is_file() or not (DIST / "test").is_dir():
        raise PhoneAppMissingError(f"android_bridge is not built: run {BUILD_COMMAND}")
    return DIST


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        raise PhoneAppMissingError("node is not installed: apt-get install nodejs npm")
    return found
