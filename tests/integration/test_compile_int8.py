"""hgen-compile --quantize int8: S counted at 8 bits in the search, tau / temperature / A / L measured on the int8
model, and that model is the one the bundle ships and the hub re-lowers (as int8)."""

import json

import numpy as np
import pytest

from hgen.compiler.cli.main import main
from hgen.compiler.errors import CompilerError

QUICK = ["--dataset", "digits:lowres", "--device", "rpi4", "--base-epochs", "4", "--episodes", "2",
         "--budget-minutes", "3", "--accuracy", "0.5", "--latency-ms", "60000", "--energy-mj", "3", "--labour", "0.05"]


def float_storage_mb() -> float:
    """LeNet-5's S on digits at 32 bits (shapes only: the cost model needs no training)."""
    from hgen.compiler.data import load_dataset
    from hgen.compiler.models import build_model
    from hgen.compiler.ops import estimate_model

    data = load_dataset("digits:lowres", seed=0)
    return estimate_model(build_model("lenet5", data.input_shape, data.num_classes)).storage_mb


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    budget = 0.3 * float_storage_mb()  # the float identity plan does not fit; at 8 bits (a quarter) it does
    code = main(["compile", *QUICK, "--storage-mb", f"{budget:.6f}", "--quantize", "int8", "--allow-miss",
                 "--out", str(out)])
    assert code == 0
    return out, json.loads((out / "summary.json").read_text()), budget


def test_storage_is_counted_at_8_bits(compiled):
    from hgen.compiler.data import load_dataset
    from hgen.compiler.models import load_model_file
    from hgen.compiler.ops import estimate_model

    out, summary, budget = compiled
    assert summary["quantize"] == "int8"
    model = load_model_file(out / "model.keras")
    at_8 = estimate_model(model, 8, 8).storage_mb
    assert summary["final"]["storage_mb"] == pytest.approx(at_8)
    assert at_8 == pytest.approx(estimate_model(model).storage_mb / 4)
    assert summary["final"]["storage_mb"] <= budget  # the search held S_c at the deployed precision
    assert summary["origin"]["storage_mb"] == pytest.approx(float_storage_mb())  # the origin stays float
    assert {"accuracy", "accuracy_model_only"} <= set(summary["final_float"])
    assert load_dataset("digits:lowres", seed=0).num_classes == 10


def test_bundle_ships_the_measured_int8_model(compiled):
    from hgen.compiler.data import load_dataset
    from hgen.runtime.bundle import load_bundle

    out, summary, _ = compiled
    bundle = summary["bundle"]
    measured = (out / "model.int8.tflite").read_bytes()
    assert (out / "bundle" / "model.int8.tflite").read_bytes() == measured  # same model, same calibration images
    test = load_dataset("digits:lowres", seed=0).test
    with load_bundle(bundle["archive"], trusted_public_key=bundle["public_key"], expected_target="rpi4") as loaded:
        assert loaded.manifest.engines[0].precision == "int8"
        assert loaded.manifest.temperature == pytest.approx(summary["temperature"])
        assert loaded.manifest.tau == pytest.approx(summary["tau"])
        top1 = loaded.engine.run(np.asarray(test.x, np.float32)).argmax(axis=1)
    assert float(np.mean(top1 == test.y)) == pytest.approx(summary["final"]["accuracy_model_only"])


def test_hub_relowers_an_int8_deployment_as_int8(compiled, tmp_path):
    from hgen.compiler.data import load_dataset
    from hgen.compiler.models import load_model_file
    from hgen.compiler.lowering.tflite import calibration_images
    from hgen.hub.retrain.publish import build_bundles
    from hgen.runtime.bundle import load_bundle

    out, summary, _ = compiled
    bundle = summary["bundle"]
    with load_bundle(bundle["archive"], trusted_public_key=bundle["public_key"], expected_target="rpi4") as loaded:
        manifest = loaded.manifest
    train = load_dataset("digits:lowres", seed=0).train
    (built,) = build_bundles(load_model_file(out / "model.keras"), manifest, version="1.0.1", temperature=1.5,
                             devices={}, out_dir=tmp_path, signing_key=bundle["signing_key"], engines=("litert",),
                             representative=calibration_images(train))
    with load_bundle(built.archive, trusted_public_key=bundle["public_key"], expected_target="rpi4") as relowered:
        assert [e.precision for e in relowered.manifest.engines] == ["int8"]
        assert relowered.manifest.model.version == "1.0.1"


def test_storage_bits_are_checked():
    from hgen.compiler.search.evaluator import EvaluatorConfig

    with pytest.raises(CompilerError, match="storage_bits"):
        EvaluatorConfig(storage_bits=16)


def test_unknown_precision_is_a_clear_error():
    from hgen.compiler.compile import compile_config
    from hgen.compiler.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="quantize"):
        compile_config(quantize="int4")


def test_calibration_images_for_a_detection_split_are_its_first_images():
    from hgen.compiler.data.detection import DetectionSplit
    from hgen.compiler.lowering.tflite import calibration_images

    x = np.random.default_rng(0).random((300, 8, 8, 1), dtype=np.float32)
    split = DetectionSplit(x, tuple(np.zeros((0, 5), np.float32) for _ in range(300)))
    assert np.array_equal(calibration_images(split), x[:200])
