"""Reviewed engine faults: a TVM config that does not match its library failed with raw RuntimeError/ValueError or
was ignored (output shape, quantization on a float library); uint8 tensors had no quantisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hgen.runtime.engines import EngineError, QuantParams, open_engine

FLOAT = {"input_shape": (1, 4), "output_shape": (1, 3)}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A real TVM library (x (1, 4) float32 -> x @ ones (1, 3)) for this machine, built in a second or two."""
    tvm = pytest.importorskip("tvm", reason="needs the TVM runtime: pip install apache-tvm==0.27.0.post1")
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((1, 4), "float32")) -> R.Tensor((1, 3), "float32"):
            with R.dataflow():
                y = R.matmul(x, R.ones(R.shape([4, 3]), "float32"))
                R.output(y)
            return y

    path = tmp_path_factory.mktemp("tvm") / "model.so"
    tvm.compile(Module, target="llvm").export_library(str(path))
    return path


def test_a_matching_config_runs(library: Path) -> None:
    engine = open_engine("tvm", library, FLOAT)
    assert engine.run(np.ones((2, 4), np.float32)).tolist() == [[4.0] * 3] * 2


@pytest.mark.parametrize("config", [
    pytest.param({**FLOAT, "input_shape": (1, 8)}, id="input-shape"),
    pytest.param({**FLOAT, "precision": "int8", "input_quantization": {"scale": 0.1, "zero_point": 0},
                  "output_quantization": {"scale": 0.1, "zero_point": 0}}, id="int8-on-a-float-library"),
])
def test_a_config_the_library_refuses_is_an_engine_error(library: Path, config: dict) -> None:
    engine = open_engine("tvm", library, config)
    with pytest.raises(EngineError, match="the library refused"):
        engine.run(np.zeros(engine.input_spec.shape, np.float32))


def test_a_wrong_output_shape_is_an_engine_error_at_the_first_run(library: Path) -> None:
    engine = open_engine("tvm", library, {**FLOAT, "output_shape": (1, 4)})
    with pytest.raises(EngineError, match=r"returned shape \(1, 3\), the manifest/config says \(1, 4\)"):
        engine.run(np.zeros((1, 4), np.float32))


def test_quantization_on_a_float32_library_is_refused(library: Path) -> None:
    """It was applied to the float input: the library then refused an int8 batch."""
    with pytest.raises(EngineError, match="a float32 model takes no input_quantization"):
        open_engine("tvm", library, {**FLOAT, "input_quantization": {"scale": 0.01, "zero_point": 0}})


def test_uint8_quantisation_clips_to_its_own_range() -> None:
    quant = QuantParams(0.5, 128, "uint8")
    q = quant.quantize(np.array([-1000.0, -1.0, 0.0, 1000.0], np.float32))
    assert q.dtype == np.uint8 and q.tolist() == [0, 126, 128, 255]
    assert quant.dequantize(q).tolist() == [-64.0, -1.0, 0.0, 63.5]
    assert QuantParams(0.5, 0).quantize(np.array([1000.0])).tolist() == [127]  # int8 stays the default
