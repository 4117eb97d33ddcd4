"""`hgen compile` on a user's YOLO data set with `--model two_stage_detector` (issue 21): the CLI trains the
two-stage detector, calibrates its temperature, chooses tau within the labour demand, lowers it to LiteRT and signs
an H-Faster-RCNN bundle; the bundle verifies, its LiteRT outputs equal the Keras model's, and an edge agent loads it
and runs its frames through the runtime's faster_rcnn kind (no hub: the gate's decision is all it needs here).
With `--quantize int8` the bundle ships the full-integer model its numbers were measured on. Tiny on purpose:
64x64 colour canvases written in the Ultralytics layout, 2 epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.cli.main import main
from hgen.compiler.compile_detect import labour_at
from hgen.compiler.data import DIGIT_LABELS, load_dataset
from hgen.compiler.data.detection import compose, load_detection_dataset
from hgen.compiler.data.synthetic import write_yolo_set
from hgen.compiler.models import load_model_file
from hgen.compiler.metrics.detection import mean_average_precision
from hgen.compiler.models.two_stage_detector import predict_slots, slots_temperature
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.sources import Frame
from hgen.runtime.bundle.loader import load_bundle
from hgen.runtime.hdnn import FusionParams, get_kind
from hgen.runtime.signing import load_public_key


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frcnn-compile")
    digits = load_dataset("digits", seed=0)
    rng = np.random.default_rng(5)
    splits = {"train": compose(digits.train, 200, rng), "val": compose(digits.val, 40, rng),
              "test": compose(digits.test, 40, rng)}
    data_yaml = write_yolo_set(root / "site", splits, DIGIT_LABELS, size=64) / "data.yaml"
    out = root / "out"
    code = main(["compile", "--dataset", f"{data_yaml}?size=64", "--model", "two_stage_detector", "--base-epochs", "2",
                 "--device", "host", "--labour", "0.1", "--accuracy", "0.01", "--allow-miss", "--latency-ms", "1000",
                 "--storage-mb", "10", "--energy-mj", "100", "--out", str(out)])
    assert code == 0
    return out


def test_compile_writes_a_calibrated_signed_faster_rcnn_bundle(compiled: Path) -> None:
    summary = json.loads((compiled / "summary.json").read_text())
    assert summary["model"] == "two_stage_detector" and summary["kind"] == "faster_rcnn"
    assert summary["accuracy_metric"] == "mAP@0.5 (model only)" and summary["strategy"] == "none"
    assert summary["temperature"] > 0 and 0.0 <= summary["tau"] <= 1.0
    data = load_detection_dataset(summary["dataset"])
    val_confidence = get_kind("faster_rcnn").confidence(predict_slots(load_model_file(compiled / "model.keras"),
                                                                      data.val.x), FusionParams(summary["temperature"]))
    assert labour_at(val_confidence, summary["tau"], 3) <= 0.1  # tau: within the labour demand on the validation split
    assert (summary["final"]["labour"] > 0.1) == any(v.startswith("labour") for v in summary["violations"])
    assert "(faster_rcnn)" in (compiled / "report.md").read_text()
    key = load_public_key(Path(summary["bundle"]["public_key"]))
    with load_bundle(compiled / "bundle", trusted_public_key=key, expected_target="x86_64") as bundle:
        manifest = bundle.manifest
        assert manifest.kind == "faster_rcnn" and list(manifest.labels) == list(DIGIT_LABELS)
        assert manifest.temperature == pytest.approx(summary["temperature"])
        assert manifest.tau == pytest.approx(summary["tau"])
        test = data.test
        outputs = bundle.engine.run(test.x[:8])
        familiarity = manifest.familiarity  # the training canvases' ranges: a darker field is asked about
    # ranges from 200 canvases: about 3 % of like canvases fall outside by chance (2 of these 40)
    assert familiarity is not None and familiarity.unfamiliar(test.x).mean() <= 0.1
    assert familiarity.unfamiliar(test.x * 0.3).mean() > 0.9
    keras_outputs = predict_slots(load_model_file(compiled / "model.keras"), test.x[:8])
    assert outputs.shape == keras_outputs.shape == (8, 8, 8, get_kind("faster_rcnn").output_channels(10))
    np.testing.assert_allclose(outputs, keras_outputs, atol=1e-3)  # float LiteRT is the Keras model


def test_agent_loads_the_compiled_bundle_and_gates_its_frames(compiled: Path, tmp_path: Path) -> None:
    summary = json.loads((compiled / "summary.json").read_text())
    agent = Agent(parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(compiled / "bundle"), "public_key": summary["bundle"]["public_key"],
                                         "store_dir": str(tmp_path / "store")},
        "source": {"kind": "images", "uri": str(tmp_path)}, "outbox": {"path": str(tmp_path / "outbox.sqlite")}}))
    try:
        assert agent.model.manifest.kind == "faster_rcnn"
        test = load_detection_dataset(summary["dataset"]).test
        grey = np.round(test.x[:12].mean(axis=-1, keepdims=True) * 255).astype(np.uint8)
        pixels = np.repeat(grey, 3, axis=-1)  # truly grey (JPEG chroma differs a little): BGR and RGB are the same
        results = [agent.process_frame(Frame(i, image, float(i))) for i, image in enumerate(pixels)]
        kind = get_kind("faster_rcnn")
        params = FusionParams(agent.model.manifest.temperature)
        outputs = predict_slots(load_model_file(compiled / "model.keras"), pixels / np.float32(255))
        expected = kind.confidence(outputs, params)
        for result, confidence, found in zip(results, expected, kind.predict(outputs, params)):
            assert result.confidence == pytest.approx(confidence, abs=1e-3)
            assert result.decision == ("confident" if confidence >= agent.model.tau else "escalate")
            assert len(result.boxes) == len(found)  # the model's boxes, in frame pixels
            assert all(0 <= b.x_min < b.x_max <= 64 and 0 <= b.y_min < b.y_max <= 64 for b in result.boxes)
    finally:
        agent.stop()


def test_an_int8_compile_ships_the_model_its_tau_and_temperature_were_chosen_on(compiled: Path,
                                                                              tmp_path: Path) -> None:
    """`--quantize int8`: the bundle runs the full-integer model, and the summary's temperature, tau, A and S are
    that model's (a device computing int8 outputs would otherwise be gated at a tau chosen for other numbers)."""
    data_yaml = next((compiled.parent / "site").rglob("data.yaml"))
    out = tmp_path / "out"
    code = main(["compile", "--dataset", f"{data_yaml}?size=64", "--model", "two_stage_detector", "--quantize", "int8",
                 "--base-epochs", "2", "--device", "host", "--labour", "0.1", "--accuracy", "0.01", "--allow-miss",
                 "--latency-ms", "1000", "--storage-mb", "10", "--energy-mj", "100", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    float_summary = json.loads((compiled / "summary.json").read_text())
    assert summary["quantize"] == "int8" and 0.0 <= summary["final_float"]["accuracy_model_only"] <= 1.0
    assert summary["final"]["storage_mb"] == pytest.approx(float_summary["final"]["storage_mb"] / 4)  # Eq. 11, 8 bits
    assert "full-integer (int8)" in (out / "report.md").read_text()
    data = load_detection_dataset(summary["dataset"])
    key = load_public_key(Path(summary["bundle"]["public_key"]))
    with load_bundle(out / "bundle", trusted_public_key=key, expected_target="x86_64") as bundle:
        assert [e.precision for e in bundle.manifest.engines] == ["int8"]
        shipped = (out / "bundle" / bundle.manifest.engines[0].file).read_bytes()
        val, test = bundle.engine.run(data.val.x), bundle.engine.run(data.test.x)
    assert shipped == (out / "model.int8.tflite").read_bytes()  # the very model its numbers were measured on
    kind = get_kind("faster_rcnn")
    assert summary["temperature"] == pytest.approx(slots_temperature(val, data.val.boxes, 10))
    params = FusionParams(summary["temperature"])
    assert labour_at(kind.confidence(val, params), summary["tau"], 3) <= 0.1
    assert summary["final"]["accuracy"] == pytest.approx(mean_average_precision(kind.predict(test, params),
                                                                                data.test.boxes, 10))
