"""The grid detector trains in seconds, lowers to TFLite through the bundle writer, and runs on the LiteRT engine
with the same outputs as Keras, decoded by the runtime's H-YOLO kind. The detector is the session's `grid_detector`
(tests/integration/conftest.py), trained by `deploy_detector`."""

from __future__ import annotations

import numpy as np

from hgen.compiler.metrics.detection import mean_average_precision
from hgen.compiler.models import load_model_file
from hgen.compiler.models.grid_detector import predict_grid
from hgen.hub.testing.models import DeployedModel
from hgen.runtime.bundle.loader import load_bundle
from hgen.runtime.hdnn import FusionParams, get_kind
from hgen.runtime.hdnn.yolo import decode
from hgen.runtime.signing import load_public_key


def test_detector_trains_lowers_and_runs_on_litert(grid_detector: DeployedModel) -> None:
    deployed = grid_detector
    data = deployed.data
    model = load_model_file(deployed.keras_path)
    keras_out = predict_grid(model, data.test.x[:64])
    assert keras_out.shape == (64, 8, 8, 15)
    score = mean_average_precision(decode(predict_grid(model, data.test.x), score_threshold=0.05), data.test.boxes, 10)
    assert score > 0.3, f"mAP@0.5 {score:.3f}: the detector did not learn"

    with load_bundle(deployed.bundle_dir, trusted_public_key=load_public_key(deployed.public_key),
                     expected_target="x86_64") as bundle:
        assert bundle.manifest.kind == "yolo" and tuple(bundle.manifest.output_shape) == (1, 8, 8, 15)
        lite_out = bundle.engine.run(data.test.x[:64])
        np.testing.assert_allclose(lite_out, keras_out, atol=1e-3)
        kind = get_kind(bundle.manifest.kind)
        params = FusionParams(bundle.manifest.temperature, bundle.manifest.fusion_lambda)
        found = kind.predict(lite_out, params)
        confidence = kind.confidence(lite_out, params)
    assert len(found) == 64 and np.all((confidence >= 0) & (confidence <= 1))
    assert sum(len(f) for f in found) > 32  # it finds digits
