"""ONNX both ways: TFLite -> ONNX (tf2onnx) checked with onnxruntime; ONNX -> relax -> TVM library, run back."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering import lower_tflite
from hgen.compiler.lowering.onnx_io import export_onnx, load_onnx, lower_onnx, run_onnxruntime, unsupported_onnx_ops
from hgen.compiler.models import build_model
from hgen.runtime.bundle.elf import elf_machine
from hgen.runtime.engines import open_engine


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(2)
    return build_model("lenet5", (28, 28, 1), 10)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).random((32, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(lower_tflite(model).content, tmp_path_factory.mktemp("onnx") / "lenet5.onnx")


def test_export_runs_in_onnxruntime(onnx_file, model, images) -> None:
    np.testing.assert_allclose(run_onnxruntime(onnx_file, images), model(images).numpy(), atol=1e-4)


def test_onnx_import_lowers_and_runs_on_tvm(onnx_file, model, images, tmp_path) -> None:
    library = lower_onnx(onnx_file, "x86_64", tmp_path / "from_onnx")
    assert elf_machine(library.path) == "x86_64"
    engine = open_engine("tvm", library.path, {"input_shape": [1, 28, 28, 1], "output_shape": [1, 10]})
    np.testing.assert_allclose(engine.run(images), model(images).numpy(), atol=1e-4)


def test_onnx_import_cross_compiles(onnx_file, tmp_path) -> None:
    library = lower_onnx(onnx_file, "rpi4", tmp_path / "rpi4")
    assert library.machine == "aarch64"


def _tiny(op_type: str, shape: list[int | str]):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(op_type, ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), onnx


def test_unsupported_ops_are_named_before_import(tmp_path) -> None:
    model, onnx = _tiny("Celu", [1, 4])
    assert unsupported_onnx_ops(model) == ["Celu"]
    path = tmp_path / "celu.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CompilerError, match="cannot import these ops: Celu"):
        lower_onnx(path, "x86_64", tmp_path / "celu")


def test_dynamic_shapes_need_an_input_shape(tmp_path) -> None:
    model, onnx = _tiny("Relu", ["batch", 4])
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InvalidArgumentError, match="pass input_shape"):
        lower_onnx(path, "x86_64", tmp_path / "relu")
    library = lower_onnx(path, "x86_64", tmp_path / "relu", input_shape=(2, 4))
    engine = open_engine("tvm", library.path, {"input_shape": [2, 4], "output_shape": [2, 4]})
    x = np.array([[-1, 2, -3, 4], [5, -6, 7, -8]], np.float32)
    np.testing.assert_array_equal(engine.run(x), np.maximum(x, 0))


def test_bad_onnx_files_are_refused(tmp_path) -> None:
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(CompilerError, match="not a valid ONNX model"):
        load_onnx(tmp_path / "bad.onnx")
