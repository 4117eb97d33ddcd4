"""Round trips: Keras -> TFLite (float, int8) -> TVM per target -> signed bundle -> loaded back and run.

Data: scikit-learn's digits scaled up to 28x28 (no download). LeNet-5 trains for a few seconds so int8
agreement is measured on a model with real decision margins, not on random logits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.bundle import pack_bundle, write_bundle
from hgen.compiler.errors import InvalidArgumentError, UnknownNameError
from hgen.compiler.lowering import get_target, lower_tflite, lower_tvm
from hgen.compiler.models import build_model, load_model_file
from hgen.runtime import signing
from hgen.runtime.bundle import TargetMismatchError, load_bundle
from hgen.runtime.bundle.elf import archive_machines, elf_machine
from hgen.runtime.engines import open_engine

LABELS = [str(i) for i in range(10)]
TEST_IMAGES = 1000


def hide_android_ndk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-NDK case on any machine: no HGEN_ANDROID_CC, and no PATH folder holding an NDK clang the target
    looks for (only those folders are dropped, so every other tool is still found)."""
    profile = get_target("android-arm64")
    monkeypatch.delenv(profile.compiler_env, raising=False)
    folders = os.environ.get("PATH", "").split(os.pathsep)
    kept = [f for f in folders if not any((Path(f) / name).exists() for name in profile.compilers)]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))
    assert profile.find_compiler() is None, "an NDK clang is still found"


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits (8x8, 0..16) -> 24x24 by pixel repetition, padded to 28x28, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3))) / 16.0
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.float32)
    return images, digits.target.astype(np.int64)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    images, labels = digits_28()
    split = len(images) - TEST_IMAGES
    return {"x_train": images[:split], "y_train": labels[:split], "x_test": images[split:]}


@pytest.fixture(scope="module")
def model(data):
    import keras

    keras.utils.set_random_seed(0)
    net = build_model("lenet5", (28, 28, 1), 10)
    net.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(data["x_train"], data["y_train"], epochs=4, batch_size=32, verbose=0)
    return net


@pytest.fixture(scope="module")
def reference(model, data) -> np.ndarray:
    return model.predict(data["x_test"], batch_size=250, verbose=0)


@pytest.fixture(scope="module")
def key():
    return signing.generate_private_key()


def _bundle(out: Path, model, data, key, *, quantize: str, target: str = "x86_64", engines=("litert", "tvm")):
    return write_bundle(
        out, model, name="lenet5-digits", version="0.1.0", target=target, labels=LABELS,
        input_spec={"scale": 1 / 16, "offset": 0.0}, tau=0.7, temperature=1.3, fusion_lambda=0.4,
        confidence_params={"a": 1.0}, predicted_metrics={"accuracy": 0.95}, plan={"prune": 0.0},
        representative_data=data["x_train"][:300], engines=engines, quantize=quantize, signing_key=key,
    )


@pytest.fixture(scope="module")
def float_bundle(tmp_path_factory, model, data, key):
    return _bundle(tmp_path_factory.mktemp("float") / "bundle", model, data, key, quantize="float")


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, model, data, key):
    return _bundle(tmp_path_factory.mktemp("int8") / "bundle", model, data, key, quantize="int8")


@pytest.mark.parametrize("form", ["directory", "archive"])
def test_float_bundle_matches_keras(float_bundle, key, data, reference, form: str) -> None:
    path = float_bundle.path if form == "directory" else pack_bundle(float_bundle.path)
    with load_bundle(path, trusted_public_key=key.public_key(), expected_target="x86_64") as loaded:
        assert list(loaded.engines) == ["litert", "tvm"]
        assert loaded.manifest.input.scale == 1 / 16 and loaded.manifest.fusion_lambda == 0.4
        for name, engine in loaded.engines.items():
            engine.warm_up(2)
            outputs = engine.run(data["x_test"])
            assert outputs.shape == (TEST_IMAGES, 10)
            np.testing.assert_allclose(outputs, reference, atol=1e-4, err_msg=name)


def test_int8_bundle_agrees_with_keras_on_top1(int8_bundle, key, data, reference) -> None:
    entries = {entry.name: entry for entry in int8_bundle.manifest.engines}
    assert entries["litert"].precision == entries["tvm"].precision == "int8"
    assert entries["litert"].input_quantization is not None
    with load_bundle(pack_bundle(int8_bundle.path), trusted_public_key=key.public_key()) as loaded:
        for name, engine in loaded.engines.items():
            agreement = float(np.mean(engine.run(data["x_test"]).argmax(1) == reference.argmax(1)))
            assert agreement >= 0.99, f"{name}: int8 top-1 agreement {agreement:.3f}"


def test_int8_file_is_smaller(float_bundle, int8_bundle) -> None:
    size = {b.manifest.engines[0].precision: b.manifest.engines[0].size for b in (float_bundle, int8_bundle)}
    assert size["int8"] < size["float32"] / 2


@pytest.fixture(scope="module")
def float_tflite(model):
    return lower_tflite(model, quantize="float")


@pytest.mark.parametrize(
    ("target", "machine", "file_says"),
    [("rpi4", "aarch64", "ARM aarch64"), ("armv7", "arm", "ARM, EABI5"), ("x86_64-native", "x86_64", "x86-64")],
)
def test_targets_link_shared_libraries_for_their_cpu(float_tflite, tmp_path, target, machine, file_says) -> None:
    if get_target(target).find_compiler() is None and not get_target(target).is_host:
        pytest.skip(f"no cross compiler for {target}: {get_target(target).link_hint}")
    library = lower_tvm(float_tflite.content, target, tmp_path / "model")
    assert library.format == "shared-library" and library.path.suffix == ".so"
    assert elf_machine(library.path) == library.machine == machine
    described = subprocess.run(["file", "-b", str(library.path)], capture_output=True, text=True).stdout
    assert "shared object" in described and file_says in described


def test_native_cpu_library_runs(float_tflite, tmp_path, data, reference) -> None:
    library = lower_tvm(float_tflite.content, "x86_64-native", tmp_path / "native")
    engine = open_engine("tvm", library.path, {"input_shape": [1, 28, 28, 1], "output_shape": [1, 10]})
    np.testing.assert_allclose(engine.run(data["x_test"][:50]), reference[:50], atol=1e-4)


def test_android_without_ndk_exports_an_object_archive(float_tflite, tmp_path, monkeypatch) -> None:
    hide_android_ndk(monkeypatch)
    library = lower_tvm(float_tflite.content, "android-arm64", tmp_path / "model")
    assert library.format == "object-archive" and library.path.suffix == ".tar"
    assert archive_machines(library.path) == {"aarch64"}
    assert "HGEN_ANDROID_CC" in library.message


def test_cross_target_bundle_is_refused_on_this_host(tmp_path, model, data, key) -> None:
    info = _bundle(tmp_path / "rpi4", model, data, key, quantize="float", target="rpi4")
    assert info.manifest.engine("tvm").machine == "aarch64"
    public = key.public_key()
    with pytest.raises(TargetMismatchError, match="'rpi4'"):
        load_bundle(info.path, trusted_public_key=public, expected_target="x86_64")
    with pytest.raises(TargetMismatchError, match="aarch64"):
        load_bundle(info.path, trusted_public_key=public)
    with load_bundle(info.path, trusted_public_key=public, engines=["litert"]) as portable:
        np.testing.assert_allclose(portable.engine.run(data["x_test"][:20]), model(data["x_test"][:20]).numpy(), atol=1e-4)


def test_users_keras_model_file_round_trips(tmp_path, model, data, key) -> None:
    path = tmp_path / "user.keras"
    model.save(path)
    loaded_model = load_model_file(path)
    info = _bundle(tmp_path / "user", loaded_model, data, key, quantize="float", engines=("litert",))
    with load_bundle(info.path, trusted_public_key=key.public_key()) as loaded:
        np.testing.assert_allclose(loaded.engine.run(data["x_test"][:20]), model(data["x_test"][:20]).numpy(), atol=1e-4)


def test_bad_lowering_arguments_are_refused(tmp_path, model, data, key) -> None:
    with pytest.raises(InvalidArgumentError, match="representative_data"):
        lower_tflite(model, quantize="int8")
    with pytest.raises(InvalidArgumentError, match=">= 100"):
        lower_tflite(model, quantize="int8", representative_data=data["x_train"][:10])
    with pytest.raises(InvalidArgumentError, match="quantize"):
        lower_tflite(model, quantize="int4")
    with pytest.raises(UnknownNameError, match="valid choices: android-arm64, armv7, rpi4"):
        _bundle(tmp_path / "x", model, data, key, quantize="float", target="esp32")
    with pytest.raises(InvalidArgumentError, match="engines"):
        _bundle(tmp_path / "y", model, data, key, quantize="float", engines=("onnx",))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not empty"):
        _bundle(tmp_path / "full", model, data, key, quantize="float")


def test_real_bundle_runs_without_tensorflow(float_bundle, int8_bundle, key, data, reference, tmp_path) -> None:
    np.save(tmp_path / "x.npy", data["x_test"][:64])
    np.save(tmp_path / "ref.npy", reference[:64])
    public = tmp_path / "trusted.pub"
    public.write_bytes(signing.public_key_pem(key.public_key()))
    archive = pack_bundle(int8_bundle.path, tmp_path / "int8.hgb")
    code = f"""
import sys
sys.modules['tensorflow'] = None; sys.modules['keras'] = None
import numpy as np
from hgen.runtime.bundle import load_bundle
x, ref = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'ref.npy')!r})
with load_bundle({str(float_bundle.path)!r}, trusted_public_key={str(public)!r}) as b:
    for e in b.engines.values():
        assert np.abs(e.run(x) - ref).max() < 1e-4
with load_bundle({str(archive)!r}, trusted_public_key={str(public)!r}) as b:
    for e in b.engines.values():
        assert (e.run(x).argmax(1) == ref.argmax(1)).mean() >= 0.95
assert not [n for n, m in sys.modules.items() if m is not None and n.split('.')[0] in ('tensorflow', 'keras')]
print('ok')
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_android_bundle_without_ndk_says_so_and_is_refused(tmp_path, model, data, key, monkeypatch) -> None:
    hide_android_ndk(monkeypatch)
    info = _bundle(tmp_path / "android", model, data, key, quantize="float", target="android-arm64", engines=("tvm",))
    assert info.manifest.engine("tvm").format == "object-archive" and any("HGEN_ANDROID_CC" in m for m in info.messages)
    with pytest.raises(TargetMismatchError, match="unlinked object archive"):
        load_bundle(info.path, trusted_public_key=key.public_key())
