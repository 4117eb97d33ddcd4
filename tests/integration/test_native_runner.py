"""The C++ runner (CMakeLists.txt, runtime/native/) built against the wheel's TVM runtime, run on bundles.

Builds once per module into a temporary directory, runs its ctest suite, then checks that it reproduces
the Python tvm engine on a host-target LeNet-5 bundle (float32 and int8).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.bundle import write_bundle
from hgen.compiler.models import build_model
from hgen.runtime import signing
from hgen.runtime.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("needs cmake and a C++ compiler (apt-get install cmake g++)")
    build = tmp_path_factory.mktemp("native-build")
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"]
    for command in (configure, ["cmake", "--build", str(build), "-j2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build


def test_ctest_suite_passes(runner: Path) -> None:
    result = subprocess.run(["ctest", "--output-on-failure"], cwd=runner, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "100% tests passed" in result.stdout


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(1)
    return build_model("lenet5", (28, 28, 1), 10)


@pytest.mark.parametrize("quantize", ["float", "int8"])
def test_runner_reproduces_the_python_tvm_engine(runner, model, tmp_path, quantize: str) -> None:
    key = signing.generate_private_key()
    images = np.random.default_rng(0).random((200, 28, 28, 1), dtype=np.float32)
    info = write_bundle(
        tmp_path / "bundle", model, name="lenet5", version="1.0.0", target="x86_64", labels=[str(i) for i in range(10)],
        tau=0.5, temperature=1.0, fusion_lambda=0.5, representative_data=images[:150], engines=("tvm",),
        quantize=quantize, signing_key=key,
    )
    entry = info.manifest.engine("tvm")
    sample = images[150:151]
    with load_bundle(info.path, trusted_public_key=key.public_key()) as loaded:
        expected = loaded.engine.run(sample)
    if quantize == "int8":
        q_in, q_out = entry.input_quantization, entry.output_quantization
        raw = np.clip(np.round(sample / q_in.scale) + q_in.zero_point, -128, 127).astype(np.int8)
        dtype = "int8"
    else:
        raw, dtype = sample, "float32"
    raw.tofile(tmp_path / "input.bin")
    command = [str(runner / "hgen_runner"), str(info.path / entry.file), str(tmp_path / "input.bin"),
               str(tmp_path / "output.bin"), "--shape", "1,28,28,1", "--dtype", dtype, "--repeat", "20"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "output_shape=1,10" in result.stdout and "median_us=" in result.stdout
    if quantize == "int8":
        out = np.fromfile(tmp_path / "output.bin", np.int8).reshape(1, 10)
        out = (out.astype(np.float32) - q_out.zero_point) * q_out.scale
        np.testing.assert_array_equal(out, expected)
    else:
        np.testing.assert_allclose(np.fromfile(tmp_path / "output.bin", np.float32).reshape(1, 10), expected, atol=1e-5)
        np.testing.assert_allclose(expected, model(sample).numpy(), atol=1e-4)


def test_runner_reports_bad_input_with_an_error(runner, tmp_path) -> None:
    (tmp_path / "input.bin").write_bytes(b"\x00" * 12)
    missing = subprocess.run(
        [str(runner / "hgen_runner"), str(tmp_path / "nope.so"), str(tmp_path / "input.bin"), str(tmp_path / "o"),
         "--shape", "1,3"], capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 2 and "hgen_runner: error:" in missing.stderr
    usage = subprocess.run([str(runner / "hgen_runner")], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage" in usage.stderr
