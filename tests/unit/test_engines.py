"""Engine registry and contract, without any model: the null engine, config validation, refusals."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hgen.runtime.bundle.elf import elf_machine, host_machine
from hgen.runtime.bundle.errors import TargetMismatchError
from hgen.runtime.engines import Engine, EngineError, QuantParams, TensorSpec, engine_names, open_engine
from hgen.runtime.engines.null import NullConfig
from hgen.runtime.errors import InvalidInputError, UnknownChoiceError


def test_registry_lists_every_engine() -> None:
    assert engine_names() == ["litert", "null", "tvm"]


def test_unknown_engine_lists_the_choices() -> None:
    with pytest.raises(UnknownChoiceError, match="valid choices: litert, null, tvm"):
        open_engine("onnxruntime", None)


def test_engine_config_is_strict() -> None:
    with pytest.raises(InvalidInputError, match="threads: unknown key"):
        open_engine("null", None, {"threads": 2})
    with pytest.raises(InvalidInputError, match="num_threads"):
        open_engine("litert", "x.tflite", {"num_threads": 0})


def test_null_engine_is_deterministic_and_shaped() -> None:
    engine = open_engine("null", None, {"input_shape": [1, 8, 8, 1], "num_classes": 4})
    engine.warm_up(2)
    batch = np.random.default_rng(0).random((6, 8, 8, 1), dtype=np.float32)
    first, second = engine.run(batch), open_engine("null", None, {"input_shape": [1, 8, 8, 1], "num_classes": 4}).run(batch)
    assert first.shape == (6, 4) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(engine.run(batch[:1]), first[:1])
    assert engine.input_spec.shape == (1, 8, 8, 1) and engine.output_spec.shape == (1, 4)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (np.zeros((8, 8, 1), np.float32), "does not match"),
        (np.zeros((1, 8, 8, 3), np.float32), "does not match"),
        (np.zeros((0, 8, 8, 1), np.float32), "positive multiple"),
        (np.zeros((1, 8, 8, 1), np.uint8), "not floating point"),
    ],
)
def test_bad_batches_are_refused(batch: np.ndarray, message: str) -> None:
    engine = open_engine("null", None, {"input_shape": [1, 8, 8, 1], "num_classes": 4})
    with pytest.raises(InvalidInputError, match=message):
        engine.run(batch)


def test_batch_must_be_a_multiple_of_the_fixed_batch() -> None:
    engine = open_engine("null", None, {"input_shape": [2, 4], "num_classes": 3})
    assert engine.run(np.ones((4, 4), np.float32)).shape == (4, 3)
    with pytest.raises(InvalidInputError, match="multiple of 2"):
        engine.run(np.ones((3, 4), np.float32))


def test_quant_params_round_trip() -> None:
    quant = QuantParams(scale=0.5, zero_point=-3)
    x = np.array([-10.0, 0.0, 1.0, 100.0], np.float32)
    q = quant.quantize(x)
    assert q.dtype == np.int8 and q.tolist() == [-23, -3, -1, 127]
    np.testing.assert_allclose(quant.dequantize(q)[:3], x[:3], atol=0.25)


class Stateful(Engine):
    """Like the LiteRT interpreter: a run sets the input on the engine, invokes, then reads it back, so a batch
    another thread sets in between is what the first run returns. A run of ones waits inside for a second run."""

    Config = NullConfig

    def __init__(self) -> None:
        self.input_spec = self.output_spec = TensorSpec((1, 2))
        self._tensor = np.zeros((1, 2), np.float32)
        self.first_inside = threading.Event()
        self.second_inside = threading.Event()

    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        self._tensor = batch  # set_tensor
        if batch[0, 0] == 1.0:
            self.first_inside.set()
            self.second_inside.wait(timeout=0.5)  # never set while runs are serialised
        else:
            self.second_inside.set()
        return self._tensor.copy()  # invoke, get_tensor


def test_two_threads_running_one_engine_each_get_their_own_outputs() -> None:
    """The swap thread's agreement check ran the running model while the pipeline did: live frames got the canary
    frames' logits. Runs of one engine are serialised, whatever the subclass's __init__ does."""
    engine = Stateful()
    got: dict[str, np.ndarray] = {}
    first = threading.Thread(target=lambda: got.setdefault("first", engine.run(np.ones((1, 2), np.float32))))
    first.start()
    assert engine.first_inside.wait(timeout=10)
    got["second"] = engine.run(np.full((1, 2), 2.0, np.float32))
    first.join(timeout=10)
    assert got["first"].tolist() == [[1.0, 1.0]] and got["second"].tolist() == [[2.0, 2.0]]


def test_litert_refuses_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="does not exist"):
        open_engine("litert", tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(EngineError, match="cannot load"):
        open_engine("litert", garbage)


def _elf(path: Path, machine: int) -> Path:
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + (3).to_bytes(2, "little") + machine.to_bytes(2, "little")
    path.write_bytes(header + b"\x00" * 64)
    return path


def test_tvm_refuses_a_library_for_another_cpu_before_loading(tmp_path: Path) -> None:
    other = 0xB7 if host_machine() != "aarch64" else 0x3E
    library = _elf(tmp_path / "model.so", other)
    assert elf_machine(library) in {"aarch64", "x86_64"}
    config = {"input_shape": [1, 4], "output_shape": [1, 2]}
    with pytest.raises(TargetMismatchError, match="built for"):
        open_engine("tvm", library, config)
    not_elf = tmp_path / "model2.so"
    not_elf.write_bytes(b"not a library")
    with pytest.raises(EngineError, match="not a shared library"):
        open_engine("tvm", not_elf, config)
    with pytest.raises(EngineError, match="int8 model needs"):
        open_engine("tvm", library, {**config, "precision": "int8"})


def test_runtime_imports_without_tensorflow() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "import numpy as np\n"
        "import hgen.runtime.engines as engines, hgen.runtime.bundle as bundle\n"
        "from hgen.runtime.bundle import load_bundle\n"
        "import hgen.runtime.engines.litert, hgen.runtime.engines.tvm, hgen.runtime.engines.null\n"
        "e = engines.open_engine('null', None, {'input_shape': [1, 4], 'num_classes': 2})\n"
        "print(e.run(np.ones((1, 4), np.float32)).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 2)"
