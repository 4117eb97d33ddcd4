"""Acceptance of the detection loop (issue #7): a registered H-YOLO model gets 1,000 human-labelled detection
samples through the hub's normal ingest and annotator API (a SIMULATED, seeded crowd drawing noisy copies of the
true boxes; box_union aggregates them); the kind's default threshold (1,000) triggers a retrain on the worker:
autoencoder filter (count stored), enhancement training on grid targets, acceptance by mAP@0.5 on the held-out
human set and the original test split, re-lowering, signing, version bump, publish. The published bundle is
verified, loaded and run through the runtime's LiteRT engine and H-YOLO kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.data.detection import compose
from hgen.compiler.data import load_dataset
from hgen.compiler.models import load_model_file
from hgen.compiler.models.grid_detector import predict_grid
from hgen.hub.app import HubApp
from hgen.hub.config import parse_hub_config
from hgen.hub.testing.detection import BoxAnnotator, BoxCrowd, detection_sample, pixel_boxes
from hgen.hub.testing.models import DeployedModel, deploy_detector, retrain_section
from hgen.hub.testing.samples import make_request
from hgen.runtime.bundle.loader import load_bundle, verify_archive
from hgen.runtime.hdnn import FusionParams, get_kind
from hgen.runtime.signing import load_public_key

DEVICE = "cam-det"
SAMPLES, M, LIMIT, BATCH = 1000, 3, 1000, 250


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    """An under-trained detector: room for people's boxes to help, as in the field."""
    return deploy_detector(tmp_path_factory.mktemp("deployed"), epochs=3, limit=LIMIT)


def device_stream(deployed: DeployedModel) -> tuple[list, dict[str, np.ndarray]]:
    """Canvases the device sees, composed from the validation digits (never in the acceptance test split), with
    the deployed model's own boxes and confidence; the oracle holds the true pixel boxes."""
    digits = load_dataset("digits", seed=0).val
    scenes = compose(digits, SAMPLES, np.random.default_rng(7))
    outputs = predict_grid(load_model_file(deployed.keras_path), scenes.x)
    kind, params = get_kind("yolo"), FusionParams(deployed.temperature)
    found, confidence = kind.predict(outputs, params), kind.confidence(outputs, params)
    samples, oracle = [], {}
    for i in range(SAMPLES):
        sample = detection_sample(DEVICE, deployed.name, scenes.x[i], found[i], confidence[i])
        samples.append(sample)
        oracle[sample.sample_id] = pixel_boxes(scenes.boxes[i], scenes.x.shape[1])
    return samples, oracle


def test_thousand_box_labels_trigger_a_detection_retrain(tmp_path: Path, deployed: DeployedModel) -> None:
    section = retrain_section(deployed, tmp_path / "models", devices={DEVICE: "x86_64"}, threshold=None,
                              dataset="digits-det", kind="yolo", dataset_limit=LIMIT, original_samples=1000,
                              epochs=2, human_repeat=2, tolerance=0.05, holdout_share=0.2)
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"},
                               "grpc": {"enabled": False}, "retrain": section})
    assert config.retrain.models[0].threshold == 1000  # the paper's detection threshold, by default
    samples, oracle = device_stream(deployed)
    app = HubApp(config).start()
    try:
        crowd = BoxCrowd(app.service.annotators, tuple(BoxAnnotator(f"sim-{i}") for i in range(M)), oracle, 10, seed=1)
        for start in range(0, SAMPLES, BATCH):
            result = app.service.submit(make_request(DEVICE, samples[start:start + BATCH], m=M), "grpc")
            assert len(result.accepted) == BATCH and not result.immediate
            crowd.run_until_idle()
        assert crowd.answered == SAMPLES * M
        assert app.retrain_store.new_label_count(deployed.name) == SAMPLES or app.retrain.busy(deployed.name)

        run = app.retrain.wait_for_run(deployed.name, after_id=0, timeout=240)
        assert run.trigger == "threshold", run
        assert run.status in ("published", "rejected"), run.error
        assert run.filtered_out >= 0 and run.samples_used + run.filtered_out == run.metrics["human_samples"] - \
            run.metrics["holdout_samples"]
        verdict = run.metrics["acceptance"]
        assert verdict["metric"] == "mAP@0.5" and verdict["holdout_samples"] >= 100
        print(f"retrain {run.status}: {verdict}; filtered out {run.filtered_out}")  # shown with -s
        if run.status == "rejected":
            pytest.fail(f"retrain refused: {run.error} ({verdict})")  # seeded: the publish path must run
        assert run.to_version == "1.0.1" and verdict["new_test"] >= verdict["current_test"] - 0.05
        assert app.retrain_store.current_version(deployed.name).version == "1.0.1"
        assert app.retrain_store.new_label_count(deployed.name) == 0  # the cutoff covers the box labels

        record = app.service.kb.bundle(deployed.name)
        key = load_public_key(deployed.public_key)
        (tmp_path / "verified").mkdir()
        manifest = verify_archive(Path(record.path), key, "x86_64", tmp_path / "verified")
        assert manifest.model.version == "1.0.1" and manifest.kind == "yolo" and manifest.tau == deployed.tau
        with load_bundle(tmp_path / "verified", trusted_public_key=key, expected_target="x86_64") as bundle:
            outputs = bundle.engine.run(deployed.data.test.x[:16])
            kind = get_kind(bundle.manifest.kind)
            params = FusionParams(bundle.manifest.temperature, bundle.manifest.fusion_lambda)
            assert len(kind.predict(outputs, params)) == 16
            assert np.all((kind.confidence(outputs, params) >= 0) & (kind.confidence(outputs, params) <= 1))
    finally:
        app.stop()
