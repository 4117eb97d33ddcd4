"""`hgen lower` on users' models and calibration files that it used to sign into bundles no device runs right
(found by a review): free height and width, no channel axis, integer input, a softmax at the end, calibration
images on another scale than the bundle's input, and options an ONNX file silently dropped. Each is exit 2 before
anything is written, naming what to change."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from hgen.compiler.cli.main import main
from hgen.compiler.lowering.tflite import representative_sample


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    assert main(["keys", "generate", "--out", str(root)]) == 0
    return root / "signing.key"


def saved(tmp_path: Path, inputs: keras.KerasTensor, outputs: keras.KerasTensor, name: str) -> Path:
    path = tmp_path / f"{name}.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def logits_model(tmp_path: Path, shape: tuple, dtype: str = "float32", name: str = "user") -> Path:
    inputs = keras.Input(shape=shape, dtype=dtype)
    x = keras.layers.Rescaling(1 / 255)(inputs) if dtype != "float32" else inputs  # a model taking raw pixels
    x = keras.layers.GlobalAveragePooling2D()(x) if len(shape) == 3 else keras.layers.Flatten()(x)
    return saved(tmp_path, inputs, keras.layers.Dense(3)(x), name)


def lower(model: Path, out: Path, key: Path, *extra: str) -> list[str]:
    return ["lower", str(model), "--out", str(out), "--key", str(key), "--engines", "litert", *extra]


@pytest.mark.parametrize("case, message", [
    ("free_size", "with free dimensions"),
    ("no_channel", "add the channel axis"),
    ("uint8_input", "takes uint8 input"),
    ("softmax", "ends in a softmax"),
])
def test_a_model_no_device_could_run_right_is_refused(case, message, tmp_path, key, capsys) -> None:
    if case == "free_size":
        model = logits_model(tmp_path, (None, None, 3))
    elif case == "no_channel":
        model = logits_model(tmp_path, (28, 28))
    elif case == "uint8_input":
        model = logits_model(tmp_path, (28, 28, 1), dtype="uint8")
    else:
        inputs = keras.Input((28, 28, 1))
        model = saved(tmp_path, inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs)),
                      "soft")
    out = tmp_path / "bundle"
    assert main(lower(model, out, key)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_calibration_images_on_another_scale_or_not_finite_are_refused(tmp_path, key, capsys) -> None:
    """Raw 0..255 pixels calibrated the input scale to 1.0 and the signed int8 bundle agreed with the float model on
    2 % of images."""
    model = logits_model(tmp_path, (28, 28, 1))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (120, 28, 28, 1))
    np.save(tmp_path / "ints.npy", pixels.astype(np.uint8))
    np.save(tmp_path / "raw.npy", pixels.astype(np.float32))
    nan = (pixels / 255).astype(np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "good.npy", (pixels / 255).astype(np.float32))
    for name, message in (("ints", "holds uint8 values"), ("raw", "range over [0, 255]"), ("nan", "not finite")):
        out = tmp_path / name
        assert main(lower(model, out, key, "--quantize", "int8", "--representative", str(tmp_path / f"{name}.npy"))) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    # the same raw pixels are right for a bundle that says its input is raw (scale 1)
    assert main(lower(model, tmp_path / "raw-input", key, "--quantize", "int8", "--scale", "1",
                      "--representative", str(tmp_path / "raw.npy"))) == 0
    assert main(lower(model, tmp_path / "good", key, "--quantize", "int8",
                      "--representative", str(tmp_path / "good.npy"))) == 0


def test_bundle_options_given_with_an_onnx_file_and_input_shape_with_keras_are_refused(tmp_path, key, capsys) -> None:
    """An ONNX file becomes an unsigned float TVM library: --quantize int8, --key and --pack were dropped, exit 0."""
    onnx = tmp_path / "user.onnx"  # refused before the file is read
    assert main(["lower", str(onnx), "--out", str(tmp_path / "lib"), "--quantize", "int8", "--key", str(key),
                 "--pack"]) == 2
    assert "--key, --quantize, --pack only apply to a Keras model's bundle" in capsys.readouterr().err
    model = logits_model(tmp_path, (28, 28, 1))
    assert main(lower(model, tmp_path / "b", key, "--input-shape", "1,28,28,1")) == 2
    assert "--input-shape only applies to an ONNX file" in capsys.readouterr().err


def test_calibration_pick_with_more_classes_than_images_spreads_over_the_classes() -> None:
    """With 1,000 classes and 500 images to pick, only classes 0-499 were calibrated on."""
    labels = np.repeat(np.arange(1000), 2)
    x = labels.astype(np.float32)[:, None]
    picked = representative_sample(x, labels, count=500)
    assert len(picked) == 500 and len(np.unique(picked)) == 500 and picked.max() > 900


def test_a_lowering_that_fails_keeps_the_previous_bundle(tmp_path, key, capsys) -> None:
    """With --force the bundle directory was emptied first: a lowering failing after that (a TVM op, a full disk,
    bad calibration images) left the user with no bundle at all."""
    from hgen.runtime.bundle import load_bundle

    model = logits_model(tmp_path, (28, 28, 1))
    out = tmp_path / "bundle"
    assert main(lower(model, out, key, "--version", "1.0.0")) == 0
    before = sorted(p.name for p in out.iterdir())
    np.save(tmp_path / "raw.npy", np.full((120, 28, 28, 1), 255, np.float32))
    assert main(lower(model, out, key, "--version", "2.0.0", "--force", "--quantize", "int8",
                      "--representative", str(tmp_path / "raw.npy"))) == 2
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with load_bundle(out, trusted_public_key=key.with_suffix(".pub")) as loaded:
        assert loaded.manifest.model.version == "1.0.0"
    assert main(lower(model, out, key, "--version", "2.0.0", "--force")) == 0
    with load_bundle(out, trusted_public_key=key.with_suffix(".pub")) as loaded:
        assert loaded.manifest.model.version == "2.0.0"


def test_a_bundle_folder_on_another_file_system_is_rewritten_in_place(tmp_path, key, monkeypatch) -> None:
    """The new bundle was staged beside its folder and moved in after the old files were deleted: with the folder
    on another file system (a mount point, a volume) the move failed (EXDEV) and left it empty. Staged inside the
    folder, every move is a rename on one file system. (Simulated: a rename across folders raises EXDEV.)"""
    import errno
    import os

    model = logits_model(tmp_path, (28, 28, 1))
    out = tmp_path / "volume" / "bundle"
    assert main(lower(model, out, key, "--version", "1.0.0")) == 0
    rename = os.rename

    def same_folder_only(src, dst, *args, **kwargs):  # Path.replace is os.replace; rename covers both
        if not str(src).startswith(str(out)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(src, dst, *args, **kwargs)

    (out / ".staging-killed").mkdir()  # what a write killed mid-way leaves: removed by the next one
    monkeypatch.setattr(os, "replace", same_folder_only)
    assert main(lower(model, out, key, "--version", "2.0.0", "--force")) == 0
    from hgen.runtime.bundle import load_bundle

    with load_bundle(out, trusted_public_key=key.with_suffix(".pub")) as loaded:
        assert loaded.manifest.model.version == "2.0.0"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
