"""Shared fixtures. Tests under tests/integration are marked `integration`, the rest `unit`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = "integration" if "integration" in Path(str(item.fspath)).parts else "unit"
        item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save things worth looking at afterwards (screenshots, reports); ignored by git."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
