"""Agent fixtures the integration tests share: the cached LiteRT bundles (LeNet-5 v1/v2/rpi4/nan), a signed
`null`-engine bundle with its keys for tests that need no ML package, and one trained grid detector (H-YOLO) for
the tests that only read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hgen.edge_agent.testing import TestKeys, make_keys, null_bundle


@pytest.fixture(scope="module")
def bundles(artifacts_dir: Path) -> dict[str, Path]:
    from hgen.compiler.testing import cached_litert_bundles  # Keras: only the tests that use these bundles pay

    return cached_litert_bundles(artifacts_dir / "agent_bundles")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> TestKeys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys: TestKeys) -> Path:
    return null_bundle(tmp_path_factory.mktemp("bundle") / "null", keys)


@pytest.fixture(scope="session")
def grid_detector(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A grid detector trained for 8 epochs on 1,500 digit canvases per split, signed as an x86_64 `yolo` bundle: it
    finds most digits and is unsure about a good share of the canvases. Trained once per session (each user used to
    train its own); its users only read it (a retrain writes to its own store)."""
    from hgen.hub.testing.models import deploy_detector  # Keras: only the tests that use it pay

    return deploy_detector(tmp_path_factory.mktemp("grid-detector"), epochs=8, limit=1500)
