"""Agent fixtures the integration tests share: the cached LiteRT bundles (LeNet-5 v1/v2/rpi4/nan), and a signed
`null`-engine bundle with its keys for tests that need no ML package."""

from __future__ import annotations

from pathlib import Path

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
