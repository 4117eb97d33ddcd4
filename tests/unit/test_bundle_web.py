"""The browser model of a bundle (manifest `web`, android_bridge/) is signed and checked like the engines' files:
the Python runtime verifies it in directories and archives, refuses it when modified or missing, and never opens
it; a manifest cannot list one file twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgen.compiler.bundle import pack_bundle, sha256_file, sign_manifest
from hgen.runtime import signing
from hgen.runtime.bundle import BundleFormatError, IntegrityError, Manifest
from hgen.runtime.bundle.loader import verify_archive, verify_directory


def _entry(path: Path) -> dict[str, object]:
    return {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def _bundle(folder: Path, key: object) -> Path:
    folder.mkdir()
    engine, web = folder / "model.float32.tflite", folder / "model.web.onnx"
    engine.write_bytes(b"not parsed by these tests" * 10)
    web.write_bytes(b"an onnx model the browser runs" * 10)
    manifest = Manifest.model_validate({
        "model": {"name": "lenet5", "version": "1.0.0"}, "created": "2026-01-01T00:00:00+00:00", "target": "x86_64",
        "engines": [{"name": "litert", **_entry(engine)}], "web": [{"runtime": "onnxruntime-web", **_entry(web)}],
        "input": {"shape": [1, 28, 28, 1]}, "output_shape": [1, 3], "labels": ["a", "b", "c"], "tau": 0.8,
        "temperature": 1.0, "lambda": 0.5})
    sign_manifest(folder, manifest, key)
    return folder


@pytest.fixture()
def key():
    return signing.generate_private_key()


def test_web_model_is_listed_and_verified(tmp_path: Path, key) -> None:
    bundle = _bundle(tmp_path / "b", key)
    manifest = verify_directory(bundle, key.public_key())
    assert [e.file for e in manifest.web] == ["model.web.onnx"]
    assert [e.file for e in manifest.files()] == ["model.float32.tflite", "model.web.onnx"]
    out = tmp_path / "out"
    out.mkdir()
    verify_archive(pack_bundle(bundle), key.public_key(), None, out)
    assert (out / "model.web.onnx").read_bytes() == (bundle / "model.web.onnx").read_bytes()


def test_modified_or_missing_web_model_is_refused(tmp_path: Path, key) -> None:
    bundle = _bundle(tmp_path / "b", key)
    web = bundle / "model.web.onnx"
    data = bytearray(web.read_bytes())
    data[5] ^= 0xFF
    web.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.web.onnx"):
        verify_directory(bundle, key.public_key())
    web.unlink()
    with pytest.raises(BundleFormatError, match="model.web.onnx"):
        verify_directory(bundle, key.public_key())


def test_a_file_listed_twice_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.float32.tflite"
    engine.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="unique"):
        Manifest.model_validate({
            "model": {"name": "m", "version": "1.0.0"}, "created": "2026-01-01T00:00:00+00:00", "target": "x86_64",
            "engines": [{"name": "litert", **_entry(engine)}], "web": [{"runtime": "litert-js", **_entry(engine)}],
            "input": {"shape": [1, 2]}, "output_shape": [1, 3], "labels": ["a", "b", "c"], "tau": 0.5,
            "temperature": 1.0, "lambda": 0.5})


def test_uint8_web_models_carry_both_quantizations() -> None:
    """LiteRT.js runs an int8 bundle with uint8 I/O: the page needs both tensors' parameters, a float model none."""
    from hgen.runtime.bundle.manifest import WebModelEntry

    base = {"runtime": "litert-js", "file": "model.web.tflite", "sha256": "0" * 64, "size": 1, "format": "tflite"}
    quant = {"scale": 0.1, "zero_point": 128}
    entry = WebModelEntry.model_validate({**base, "io_dtype": "uint8", "input_quantization": quant,
                                          "output_quantization": quant})
    assert entry.input_quantization is not None and entry.input_quantization.zero_point == 128
    for bad in ({"io_dtype": "uint8", "input_quantization": quant}, {"input_quantization": quant},
                {"io_dtype": "uint8", "input_quantization": quant, "output_quantization": {"scale": 0.1,
                                                                                           "zero_point": 256}}):
        with pytest.raises(ValueError):
            WebModelEntry.model_validate({**base, **bad})
