"""A hub installed without the source checkout serves the phone app: the build is package data of `hgen.hub.web`
(hub/web/device_app, found through importlib.resources). A wheel is built from a copy of the tracked sources, unpacked
into a folder, and imported with `python -S` (no site-packages .pth files, so not the editable checkout); with the
app removed from that install, the page names the build command instead of failing silently."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "pyproject.toml", "hub", "runtime", "protos", "compiler", "edge_agent")

# Runs inside the unpacked wheel: where the hub and its app come from, and what /device serves with and without it.
PROBE = """
import json, shutil, sys
from pathlib import Path
import hgen.hub
from hgen.hub.testing.web import web_hub
from hgen.hub.web.phones import device_app
app = device_app()
with web_hub(Path.cwd()) as hub:  # the test's tmp_path: its database goes with it
    client = hub.web.app.test_client()
    script = client.get("/device/static/device.js")
    served = (script.status_code, len(script.data), client.get("/device").status_code)
    shutil.rmtree(app)
    missing = client.get("/device")
print(json.dumps({"hub": hgen.hub.__file__, "app": str(app), "served": served,
                  "missing": [missing.status_code, missing.get_data(as_text=True)]}))
"""


def wheel_of_the_sources(built: Path, folder: Path) -> Path:
    """`pip wheel` of a copy of the tracked sources plus the built app (the checkout itself is left untouched)."""
    listed = subprocess.run(["git", "ls-files", "-z", *SOURCES], cwd=ROOT, capture_output=True, check=True).stdout
    source = folder / "src"
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(built, source / "hub" / "web" / "device_app")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(folder / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return next((folder / "wheel").glob("hgen-*.whl"))


def test_an_installed_hub_serves_the_phone_app_without_the_checkout(phone_app_required: Path, tmp_path: Path) -> None:
    built = phone_app_required
    wheel = wheel_of_the_sources(built, tmp_path)
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        assert "hgen/hub/web/device_app/device.js" in archive.namelist()
        archive.extractall(installed)
    path = f"{installed}:{sysconfig.get_paths()['purelib']}"  # the wheel first, then its dependencies
    run = subprocess.run([sys.executable, "-S", "-c", PROBE], cwd=tmp_path,
                         env={"PYTHONPATH": path, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(seen["hub"]).is_relative_to(installed) and Path(seen["app"]).is_relative_to(installed)
    assert seen["served"] == [200, (built / "device.js").stat().st_size, 200]
    status, page = seen["missing"]
    assert status == 503 and "make android-bridge" in page
