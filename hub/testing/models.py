"""Small deployed H-DNNs for retrain tests and the closed-loop benchmark: train, calibrate, lower, sign.

It does what `hgen-compile` does at its end (train, fit the temperature, `write_bundle`), without the search, so a
test has a real deployed model and bundle in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data import Dataset, load_dataset
from hgen.compiler.data.detection import DetectionDataset


@dataclass(frozen=True)
class DeployedModel:
    """What a hub needs to retrain a model: its Keras file, signed bundle, signing key and the data it saw."""

    name: str
    keras_path: Path
    bundle_dir: Path
    signing_key: Path
    public_key: Path
    data: Dataset | DetectionDataset
    tau: float
    temperature: float


PATH_FIELDS = ("keras_path", "bundle_dir", "signing_key", "public_key")


def write_record(deployed: DeployedModel, path: Path) -> None:
    """`deployed` but its data, as JSON written whole, for another process to read back (`read_record`)."""
    fields = {k: str(v) if k in PATH_FIELDS else v for k, v in vars(deployed).items() if k != "data"}
    path.with_suffix(".tmp").write_text(json.dumps(fields))
    path.with_suffix(".tmp").replace(path)


def read_record(path: Path, data: Dataset | DetectionDataset) -> DeployedModel:
    """The DeployedModel `write_record` wrote, with `data` loaded again by the reader."""
    fields = json.loads(path.read_text())
    return DeployedModel(**(fields | {k: Path(fields[k]) for k in PATH_FIELDS}), data=data)


def _save_and_sign(out_dir: Path, model: Any, data: Any, *, name: str, version: str, kind: str, target: str,
                   tau: float, temperature: float) -> DeployedModel:
    """A fresh key pair, the Keras file and a signed bundle of `model` in `out_dir`: what a hub retrains."""
    from hgen.compiler.bundle.keys import generate_keypair

    out_dir.mkdir(parents=True, exist_ok=True)
    keys = generate_keypair(out_dir / "keys", overwrite=True)
    keras_path = out_dir / "model.keras"
    model.save(keras_path)
    deployed = DeployedModel(name, keras_path, out_dir / "bundle", keys.private_path, keys.public_path, data, tau,
                             temperature)
    sign_bundle(deployed, model, kind, deployed.bundle_dir, target=target, version=version)
    return deployed


def sign_bundle(deployed: DeployedModel, model: Any, kind: str, out: Path, *, target: str = "x86_64",
                version: str = "1.0.0", quantize: str = "float") -> Path:
    """`model` as a bundle of `deployed`'s name, gate and key (and the data's first 100 training images to
    calibrate an int8 one): what `_save_and_sign` writes, or its int8 twin for the same Keras file."""
    from hgen.compiler.bundle import write_bundle

    write_bundle(out, model, name=deployed.name, version=version, kind=kind, target=target,
                 labels=deployed.data.labels, input_spec={"scale": 1.0 / 255.0, "offset": 0.0}, tau=deployed.tau,
                 temperature=deployed.temperature, fusion_lambda=0.1, confidence_params={"m": 3.0},
                 plan={"layers": {}}, representative_data=deployed.data.train.x[:100],
                 signing_key=deployed.signing_key, quantize=quantize, overwrite=True)
    return out


def deploy_lenet(out_dir: Path, *, dataset: str = "digits:lowres", epochs: int = 2, tau: float = 0.8,
                 train_samples: int | None = None, limit: int | None = None, seed: int = 0,
                 name: str = "lenet5", target: str = "x86_64", version: str = "1.0.0") -> DeployedModel:
    """Train LeNet-5 for `epochs` on `dataset` (optionally only its first `train_samples`) and sign a bundle."""
    from hgen.compiler.data import Split
    from hgen.compiler.models import build_model
    from hgen.compiler.train import TrainConfig, calibrate, train_classifier

    data = load_dataset(dataset, seed=seed, limit=limit)
    model = build_model("lenet5", data.input_shape, data.num_classes, seed=seed)
    train: Split = data.train.take(train_samples)
    train_classifier(model, train, config=TrainConfig(epochs=epochs, seed=seed))
    temperature = float(calibrate(model, data.val))
    return _save_and_sign(out_dir, model, data, name=name, version=version, kind="cnn", target=target, tau=tau,
                          temperature=temperature)


def deploy_compiled(compiled: Any, data: Dataset) -> DeployedModel:
    """What hgen-compile wrote (a `CompileResult`: model.keras, plan.json, the signed bundle and its keys) as a
    model the hub retrains: a realistic deployed H-CNN, with the search's tau and calibrated temperature."""
    import json

    bundle = compiled.summary["bundle"]
    chosen = json.loads((compiled.out / "plan.json").read_text())
    return DeployedModel(compiled.summary["model"], compiled.out / "model.keras", Path(bundle["dir"]),
                         Path(bundle["signing_key"]), Path(bundle["public_key"]), data, float(chosen["tau"]),
                         float(chosen["temperature"]))


def deploy_detector(out_dir: Path, *, dataset: str = "digits-det", epochs: int = 4, tau: float = 0.5,
                    limit: int | None = None, seed: int = 0, name: str = "griddet", target: str = "x86_64",
                    version: str = "1.0.0") -> DeployedModel:
    """The H-YOLO counterpart of `deploy_lenet`: train the grid detector on digit canvases and sign a `yolo` bundle."""
    from hgen.compiler.data.detection import load_detection_dataset
    from hgen.compiler.models import build_model
    from hgen.compiler.models.grid_detector import DetectorTrainConfig, calibrate_detector, train_detector

    data = load_detection_dataset(dataset, seed=seed, limit=limit)
    model = build_model("grid_detector", data.input_shape, data.num_classes, seed=seed)
    train_detector(model, data.train, data.num_classes, DetectorTrainConfig(epochs=epochs, seed=seed))
    temperature = calibrate_detector(model, data.val, data.num_classes)
    return _save_and_sign(out_dir, model, data, name=name, version=version, kind="yolo", target=target, tau=tau,
                          temperature=temperature)


def deploy_two_stage(out_dir: Path, *, dataset: str = "digits-det", epochs: int = 6, tau: float = 0.5,
                     limit: int | None = None, train_samples: int | None = None, seed: int = 0, name: str = "frcnn",
                     target: str = "x86_64", version: str = "1.0.0") -> DeployedModel:
    """The H-Faster-RCNN counterpart of `deploy_detector`: the two-stage detector (trained on the first
    `train_samples` canvases if given), signed as a `faster_rcnn` bundle."""
    from hgen.compiler.data.detection import load_detection_dataset
    from hgen.compiler.models import build_model
    from hgen.compiler.models.two_stage_detector import TwoStageTrainConfig, calibrate_two_stage, train_two_stage

    data = load_detection_dataset(dataset, seed=seed, limit=limit)
    model = build_model("two_stage_detector", data.input_shape, data.num_classes, seed=seed)
    train_two_stage(model, data.train.take(train_samples), data.num_classes,
                    TwoStageTrainConfig(epochs=epochs, seed=seed))
    temperature = calibrate_two_stage(model, data.val, data.num_classes)
    return _save_and_sign(out_dir, model, data, name=name, version=version, kind="faster_rcnn", target=target,
                          tau=tau, temperature=temperature)


def recompiled(deployed: DeployedModel, out: Path, *, version: str, target: str = "x86_64",
               key: Path | None = None, labels: tuple[str, ...] | None = None,
               name: str | None = None, scale: float = 1.5) -> tuple[Path, Path]:
    """What an operator's offline `hgen-compile` leaves for `hgen-hub publish`: other weights (the last layer times
    `scale`), a bundle folder signed with the deployed key (or `key`), and its Keras file."""
    from hgen.compiler.bundle import write_bundle
    from hgen.compiler.models import load_model_file

    model = load_model_file(deployed.keras_path)
    last = model.layers[-1]
    last.set_weights([w * scale for w in last.get_weights()])
    out.mkdir(parents=True, exist_ok=True)
    keras_path = out / "model.keras"
    model.save(keras_path)
    write_bundle(out / f"bundle-{target}", model, name=name or deployed.name, version=version, target=target,
                 labels=labels or deployed.data.labels, input_spec={"scale": 1.0 / 255.0}, tau=0.7,
                 temperature=1.3, fusion_lambda=0.1, plan={"layers": {}}, web=(),
                 representative_data=deployed.data.train.x[:50], signing_key=key or deployed.signing_key,
                 overwrite=True)
    return out / f"bundle-{target}", keras_path


def retrain_section(deployed: DeployedModel, store_dir: Path, *, devices: dict[str, str], threshold: int,
                    dataset: str = "digits:lowres", kind: str = "cnn", dataset_limit: int | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """The `retrain:` part of a hub config for `deployed` (plain data, validated by parse_hub_config)."""
    section: dict[str, Any] = {
        "enabled": True, "store_dir": str(store_dir), "signing_key": str(deployed.signing_key),
        "models": [{"name": deployed.name, "keras_model": str(deployed.keras_path), "bundle": str(deployed.bundle_dir),
                    "dataset": dataset, "devices": devices, "threshold": threshold, "kind": kind,
                    "dataset_limit": dataset_limit}],
    }
    section.update(overrides)
    return section


def device_samples(deployed: DeployedModel, n: int, device_id: str) -> tuple[list[Any], dict[str, int]]:
    """Test images the model never trained on, with the deployed model's own output, as the device sends them;
    and the true class of each (what the simulated people see)."""
    import uuid

    import cv2

    from hgen.compiler.models import load_model_file
    from hgen.compiler.train import predict_logits
    from hgen.protos import hub_pb2
    from hgen.runtime.calibration import softmax

    test = deployed.data.test
    probs = softmax(predict_logits(load_model_file(deployed.keras_path), test.x[:n]), deployed.temperature)
    samples, oracle = [], {}
    for i in range(n):
        pixels = np.clip(test.x[i, :, :, 0] * 255.0, 0, 255).astype(np.uint8)
        ok, png = cv2.imencode(".png", pixels)
        assert ok
        sample = hub_pb2.Sample(sample_id=str(uuid.uuid4()), device_id=device_id, bundle_name=deployed.name,
                                bundle_version="1.0.0",
                                image=hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_PNG, data=png.tobytes(), height=28,
                                                    width=28, channels=1),
                                output=hub_pb2.ModelOutput(class_probabilities=probs[i].tolist(),
                                                           confidence=float(probs[i].max()), kind=hub_pb2.HDNN_KIND_CNN))
        samples.append(sample)
        oracle[sample.sample_id] = int(test.y[i])
    return samples, oracle
