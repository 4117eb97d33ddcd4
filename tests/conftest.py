"""Shared fixtures. Tests under tests/integration are marked `integration`, the rest `unit`.

Prerequisites policy: a test that needs something the machine may lack (mosquitto, PostgreSQL, Debian's
chromium, cmake/g++, cross compilers, FashionMNIST, the MNIST files in $HGEN_DATA, MetaSchedule) skips only when
the machine cannot provide it, with a reason naming what to install; the `*_required` fixtures below are the
shared way to say so. With `CI=true` in the environment every skip is turned into a failure (hooks below), so CI
cannot quietly drop tests: the message is "CI=true: a prerequisite is missing: <skip reason>". xfail is untouched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CI_SKIP_MESSAGE = "CI=true: a prerequisite is missing: "
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = "integration" if "integration" in Path(str(item.fspath)).parts else "unit"
        item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save things worth looking at afterwards (screenshots, reports); ignored by git."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# --- CI=true: a skip is a failure -------------------------------------------------------------------------


def ci_forbids_skips() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _skip_reason(longrepr: Any) -> str:
    """A skipped report's longrepr is (path, lineno, "Skipped: <reason>")."""
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and ci_forbids_skips():
        report.outcome = "failed"
        report.longrepr = CI_SKIP_MESSAGE + _skip_reason(report.longrepr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Skips in setup (fixtures, skip/skipif marks), call and teardown; outermost wrapper, so it sees the
    report after the skipping plugin has marked xfails (`wasxfail`), which are left alone."""
    report = yield
    _fail_if_skipped(report)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """Skips while collecting (module-level `pytest.skip(allow_module_level=True)`, `pytest.importorskip`) become
    collection errors, which fail the run."""
    report = yield
    _fail_if_skipped(report)
    return report


def pytest_report_header(config: pytest.Config) -> str | None:
    return "CI=true: skipped tests are reported as failures" if ci_forbids_skips() else None


# --- one PostgreSQL cluster per session (per xdist worker); `pg_url` gives each test a fresh database on it. Defined
# here, not imported into each module, where it became one cluster per module kept until the session ended.
from hgen.hub.testing.fixtures import pg_server  # noqa: E402,F401 (pytest fixture)

# --- prerequisites: skip (with what to install) only where the machine cannot provide them --------------------


@pytest.fixture(scope="session")
def mosquitto_required() -> str:
    """The mosquitto binary, for tests that start their own broker (the `broker` fixture of
    hgen.hub.testing.fixtures already skips the same way)."""
    from hgen.hub.testing.services import ServiceUnavailableError, mosquitto_binary

    try:
        return mosquitto_binary()
    except ServiceUnavailableError as exc:
        pytest.skip(f"MQTT tests skipped: {exc}")


@pytest.fixture(scope="session")
def chromium_required() -> str:
    """Debian's chromium, which Playwright drives (its own browser downloads are not used)."""
    found = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None) or shutil.which("chromium")
    if found is None:
        pytest.skip("Debian chromium is not installed; install it with `apt-get install chromium`")
    return found


def _require_dataset(base: str) -> None:
    from hgen.compiler.data.builtins import get_builtin
    from hgen.compiler.errors import DatasetNotFoundError

    try:
        get_builtin(base).resolve(None, False)
    except DatasetNotFoundError as exc:
        pytest.skip(f"needs the {base} data set: {exc}")


@pytest.fixture(scope="session")
def fashion_mnist_required() -> None:
    """FashionMNIST (D3..D5) where load_dataset finds it: `apt-get install dataset-fashion-mnist`."""
    _require_dataset("fashion-mnist")


@pytest.fixture(scope="session")
def mnist_required() -> None:
    """The MNIST IDX files (D1, D2, mnist-det) in $HGEN_DATA/mnist/ (`make` sets HGEN_DATA to ../shared/data)."""
    _require_dataset("mnist")


@pytest.fixture(scope="session")
def phone_app_required() -> Path:
    """The phone's page built into the installed hub (`make test` builds it first; a bare `pytest` in a checkout
    where it was never built would otherwise fail on the hub's 503)."""
    from hgen.hub.web.phones import PhoneAppMissingError, device_app

    try:
        return device_app()
    except PhoneAppMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Python's temp folder for this test only, so what the code under test leaves there can be seen."""
    import tempfile

    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root
