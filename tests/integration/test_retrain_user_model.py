"""The hub retrains a field team's own Keras model (not the zoo's LeNet-5): Rescaling(1/255) on raw pixels, an adapted
Normalization, BatchNorm, DepthwiseConv2D, GAP, Dropout; compiled by `hgen-compile --model FILE`, then retrained
through the hub's Python API with SIMULATED people's labels (found by a review of the retrain path):

* the round trip (passes on the code before the review too, kept as a regression guard): the retrain loads the
  compile's model.keras, keeps the Normalization statistics, publishes a bundle that answers like the retrained Keras
  model and takes the same input scale as the first bundle, well above chance;
* `retrain.models[].keras_model` naming the user's own file (its Rescaling still expects 0..255 pixels: the compile
  adapted its copy, model.keras) or a bundle made by `hgen lower --scale 1` (x = raw pixels, the hub retrains on
  raw / 255): the hub distilled a model at chance, judged it against the same model at chance, and published it to the
  devices (0.68 -> 0.09 on FashionMNIST). Now the run fails saying which file to name, nothing is published, and once
  the configuration names the compile's model.keras the next retrain publishes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

from hgen.compiler.cli.main import main
from hgen.compiler.data import load_dataset
from hgen.compiler.models import load_model_file
from hgen.compiler.train import predict_logits
from hgen.hub.config import parse_hub_config
from hgen.hub.crowd import SimulatedCrowd
from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
from hgen.hub.retrain.release import Releases
from hgen.hub.errors import ReleaseError
from hgen.hub.service import HubService
from hgen.hub.testing.crowd import CrowdDriver
from hgen.hub.testing.models import DeployedModel, device_samples, retrain_section
from hgen.hub.testing.samples import make_request
from hgen.runtime.bundle import load_bundle

CHEAP = ["--dataset", "digits", "--device", "host", "--accuracy", "0.3", "--latency-ms", "60000", "--episodes", "1",
         "--evaluations", "1", "--final-epochs", "1", "--finetune-samples", "200", "--allow-miss"]
DEVICE, SAMPLES = "cam-1", 60


def _user_model(data: Any, path: Path) -> None:
    """The Keras guides' way: raw 0..255 pixels in, Rescaling(1/255), then the user's own layers; logits out."""
    norm = layers.Normalization(name="norm")
    norm.adapt(data.train.x[:256])
    image = keras.Input((28, 28, 1), name="image")
    h = norm(layers.Rescaling(1 / 255.0, name="to_unit")(image))
    h = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="c1")(h)
    h = layers.ReLU(name="r1")(layers.BatchNormalization(momentum=0.9, name="bn1")(h))
    h = layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = layers.ReLU(name="r2")(layers.BatchNormalization(momentum=0.9, name="bn2")(h))
    h = layers.Dropout(0.1, name="drop")(layers.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(image, layers.Dense(10, name="logits")(h), name="field")
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.train.x * 255.0, data.train.y, epochs=8, batch_size=32, verbose=0)
    model.save(path)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    """The user's file (next to the compile's folder) and what `hgen-compile --model` made of it."""
    root = tmp_path_factory.mktemp("user")
    data = load_dataset("digits", seed=0)
    _user_model(data, root / "field.keras")
    assert main(["compile", "--model", str(root / "field.keras"), *CHEAP, "--out", str(root / "out")]) == 0
    summary = json.loads((root / "out" / "summary.json").read_text())
    plan = json.loads((root / "out" / "plan.json").read_text())
    bundle = summary["bundle"]
    return DeployedModel(summary["model"], root / "out" / "model.keras", Path(bundle["dir"]),
                         Path(bundle["signing_key"]), Path(bundle["public_key"]), data, float(plan["tau"]),
                         float(plan["temperature"]))


class Hub:
    """A knowledge base with SAMPLES answered by SIMULATED people, and a retrain pipeline for `deployed`."""

    def __init__(self, root: Path, deployed: DeployedModel, device_model: DeployedModel) -> None:
        self.root, self.deployed = root, deployed
        self.config = self._config(deployed)
        self.service = HubService.from_config(self.config)
        samples, oracle = device_samples(device_model, SAMPLES, DEVICE)  # what the device's bundle said of them
        self.service.submit(make_request(DEVICE, samples, m=1), "grpc")
        crowd = CrowdDriver(self.service.annotators, SimulatedCrowd.uniform(1, 0.95, 10, seed=1), oracle)
        while crowd.run_once():
            pass
        self.store = RetrainStore(self.service.kb)
        self.pipeline = self._pipeline()

    def _config(self, deployed: DeployedModel) -> Any:
        return parse_hub_config({
            "devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{self.root / 'hub.db'}"},
            "retrain": retrain_section(deployed, self.root / "store", devices={DEVICE: "x86_64"}, threshold=10_000,
                                       dataset="digits", original_samples=200, epochs=1, filter_epochs=1,
                                       min_holdout=5, tolerance=0.1, holdout_share=0.3)})

    def _pipeline(self) -> RetrainPipeline:
        return RetrainPipeline(self.config.retrain, self.store, HubPublisher(self.service.kb))

    def reconfigure(self, deployed: DeployedModel) -> None:
        """The operator corrects hub.yaml and restarts the hub (same knowledge base and store)."""
        self.deployed, self.config = deployed, self._config(deployed)
        self.pipeline = self._pipeline()

    def retrain(self) -> Any:
        current = self.pipeline.current(self.deployed.name)
        return self.pipeline.execute(self.store.create_run(self.deployed.name, "api", current.version))


@pytest.fixture
def hub(tmp_path: Path, compiled: DeployedModel) -> Iterator[Hub]:
    made = Hub(tmp_path, compiled, compiled)
    yield made
    made.service.close()


def _answers(bundle_dir: str | Path, public_key: Path, raw: np.ndarray) -> tuple[np.ndarray, Any]:
    """The bundle's logits on camera pixels, fed as a device feeds them (x = raw * scale + offset)."""
    with load_bundle(bundle_dir, trusted_public_key=public_key, engines=["litert"]) as loaded:
        spec = loaded.manifest.input
        return np.asarray(loaded.engine.run(raw * spec.scale + spec.offset)), spec


def test_a_users_own_model_retrains_and_its_bundle_answers_like_it(hub: Hub, compiled: DeployedModel) -> None:
    """Passes on the code before the review too: the guard that a user's model keeps working through the loop."""
    run = hub.retrain()
    assert (run.status, run.to_version) == ("published", "1.0.1"), run.error
    new = hub.store.current_version(compiled.name)
    data, raw = compiled.data, np.round(compiled.data.test.x * 255.0)
    first, first_spec = _answers(compiled.bundle_dir, compiled.public_key, raw)
    device, spec = _answers(new.bundle_dir, compiled.public_key, raw)
    assert (spec.scale, spec.offset) == (first_spec.scale, first_spec.offset) == (1 / 255.0, 0.0)
    retrained = load_model_file(new.keras_path)
    keras_logits = predict_logits(retrained, raw * spec.scale + spec.offset)
    assert np.mean(device.argmax(1) == keras_logits.argmax(1)) >= 0.99
    np.testing.assert_allclose(device, keras_logits, atol=1e-3 * max(1.0, np.abs(keras_logits).max()))
    before, after = np.mean(first.argmax(1) == data.test.y), np.mean(device.argmax(1) == data.test.y)
    assert before > 0.5 and after > before - 0.1  # not chance (0.1): the same input scale as the first bundle
    original = load_model_file(compiled.keras_path)
    for name in ("norm",):  # the adapted statistics, unchanged by the fine-tune
        for kept, was in zip(retrained.get_layer(name).weights, original.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(kept), np.asarray(was))
    for name in ("bn1", "bn2"):  # re-estimated on the fine-tune's images, not left at batch statistics or init
        moving = [np.asarray(w) for w in retrained.get_layer(name).weights[2:]]
        assert all(np.all(np.isfinite(w)) for w in moving) and np.all(moving[1] > 0)


def _raw_pixel_bundle(compiled: DeployedModel, user_file: Path, out: Path) -> DeployedModel:
    """What `hgen lower field.keras --scale 1 --offset 0` makes of the user's raw-pixel model, signed with the key
    the devices trust."""
    from hgen.compiler.bundle import write_bundle

    write_bundle(out, load_model_file(user_file), name=compiled.name, version="1.0.0", kind="cnn", target="x86_64",
                 labels=compiled.data.labels, input_spec={"scale": 1.0, "offset": 0.0}, tau=compiled.tau,
                 temperature=compiled.temperature, fusion_lambda=0.1, confidence_params={"m": 3.0},
                 plan={"layers": {}}, engines=("litert",), signing_key=compiled.signing_key, overwrite=True)
    return replace(compiled, keras_path=user_file, bundle_dir=out)


@pytest.mark.parametrize("case", ["users_own_file", "lowered_for_raw_pixels"])
def test_a_keras_file_that_does_not_answer_like_the_bundle_fails_the_retrain_and_publishes_nothing(
        case: str, tmp_path: Path, compiled: DeployedModel) -> None:
    user_file = compiled.keras_path.parent.parent / "field.keras"  # the user's own, its Rescaling still 1/255
    if case == "users_own_file":
        wrong, said = replace(compiled, keras_path=user_file), f"its Keras file {user_file} does not answer like"
    else:
        wrong, said = _raw_pixel_bundle(compiled, user_file, tmp_path / "lowered"), "x = raw * 1 + 0"
    hub = Hub(tmp_path, wrong, compiled)
    try:
        run = hub.retrain()
        assert run.status == "failed", run.metrics  # was published: a model at chance sent to every device
        assert run.error.startswith("RetrainError: ") and said in run.error, run.error
        if case == "users_own_file":
            assert "expects 0..255 pixels" in run.error and "OUT/model.keras" in run.error, run.error
        assert hub.service.kb.bundle(compiled.name) is None
        if case == "users_own_file":  # corrected in hub.yaml: the kept copy of the wrong file is replaced
            hub.reconfigure(compiled)
            run = hub.retrain()
            assert (run.status, run.to_version) == ("published", "1.0.1"), run.error
    finally:
        hub.service.close()


def test_an_offline_release_with_another_keras_file_is_refused(hub: Hub, compiled: DeployedModel) -> None:
    """`hgen-hub publish --keras` names the next retrain's starting point: the user's own file was taken (same
    input and output shapes) and the next retrain distilled a model at chance."""
    releases = Releases(hub.pipeline)
    user_file = compiled.keras_path.parent.parent / "field.keras"
    with pytest.raises(ReleaseError, match="does not answer like"):
        releases.publish(compiled.name, [compiled.bundle_dir], user_file)
    assert hub.service.kb.bundle(compiled.name) is None
