"""A detector's Keras file must be the model its bundle runs before a retrain starts from it (hgen.hub.retrain.deployed):
the check covered classifiers only, so `retrain.models[].keras_model` naming another compile's detector was
fine-tuned, judged against itself and published to every device. Real zoo detectors (H-YOLO's grid detector on
digits-det), a real int8 LiteRT bundle run by the runtime: its own file passes, another seed's is refused, with the
reason said."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgen.compiler.models import load_model_file
from hgen.hub.retrain.deployed import OneModel
from hgen.hub.testing.models import DeployedModel, deploy_detector, sign_bundle
from hgen.runtime.bundle.loader import verify_directory
from hgen.runtime.signing import load_public_key


@pytest.fixture(scope="module")
def detectors(tmp_path_factory: pytest.TempPathFactory) -> tuple[DeployedModel, DeployedModel, Path]:
    """Two detectors of one architecture and data (seeds 0 and 100) and the first's int8 bundle."""
    work = tmp_path_factory.mktemp("detectors")
    own = deploy_detector(work / "own", epochs=2, limit=600, seed=0)
    other = deploy_detector(work / "other", epochs=2, limit=600, seed=100)
    int8 = sign_bundle(own, load_model_file(own.keras_path), "yolo", work / "int8", quantize="int8")
    return own, other, int8


def test_a_detectors_own_file_passes_and_another_detectors_is_refused(
        detectors: tuple[DeployedModel, DeployedModel, Path]) -> None:
    own, other, int8 = detectors
    key = load_public_key(own.public_key)
    manifest = verify_directory(int8, key)
    check = OneModel(lambda: key)
    images = own.data.test.x
    assert check.problem(own.keras_path, own.bundle_dir, manifest, images) is None  # float bundle
    assert check.problem(own.keras_path, int8, manifest, images) is None  # int8: one model still
    said = check.problem(other.keras_path, int8, manifest, images)
    assert said is not None and said.startswith(f"its Keras file {other.keras_path} does not answer like the bundle")
    assert "outputs correlated" in said and "OUT/model.keras" in said
