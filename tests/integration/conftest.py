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
    finds most digits and is unsure about a good share of the canvases. Trained once per run, by the first pytest-xdist
    worker that needs it, in the run's own temporary folder, which the other worker reads (each user used to train its
    own, 20 s a worker); its users only read it (a retrain writes to its own store)."""
    import fcntl

    from hgen.compiler.data.detection import load_detection_dataset
    from hgen.hub.testing.models import deploy_detector, read_record, write_record  # Keras: only its users pay

    dataset, limit = "digits-det", 1500
    run = tmp_path_factory.getbasetemp()
    # an xdist worker's folder (popen-gwN) is inside this run's; a pytest started by a test inherits
    # PYTEST_XDIST_WORKER, so the folder's name, not the environment, says which
    folder = (run.parent if run.name.startswith("popen-gw") else run) / "grid-detector"
    record = folder / "deployed.json"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / "grid-detector.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            deployed = deploy_detector(folder, dataset=dataset, epochs=8, limit=limit)
            write_record(deployed, record)
            return deployed
    return read_record(record, load_detection_dataset(dataset, seed=0, limit=limit))
