"""ONNX in and out. In: a user's ONNX model -> relax ONNX frontend -> TVM library per target.
Out: TFLite -> ONNX with tf2onnx (Keras 3 -> ONNX does not convert; the TFLite flatbuffer does), checked
with onnxruntime, for users of other runtimes.

Known not to import with apache-tvm 0.27's relax ONNX frontend (absent from its converter map): control
flow (If, Loop, Scan, SequenceMap), recurrent layers (LSTM, GRU, RNN), integer-arithmetic quantised ops
(QLinearConv, QLinearMatMul, ConvInteger; QDQ QuantizeLinear/DequantizeLinear do import), random ops,
signal ops (DFT, STFT, window functions), string ops, DeformConv, Col2Im, CenterCropPad, Celu, Swish, SwiGLU,
RotaryEmbedding, LpNormalization, ReverseSequence, CumProd, Det. `unsupported_onnx_ops` lists a model's
offenders before conversion, so the error names them all at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering.targets import get_target
from hgen.compiler.lowering.tvm_relax import TVMLibrary, compile_relax, export_library, import_tvm

DEFAULT_OPSET = 17


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise CompilerError("ONNX support needs the onnx package: pip install 'hgen[compiler]'") from None
    return onnx


def load_onnx(path: str | Path) -> Any:
    """Read and structurally check an ONNX file."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"ONNX model {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, ValidationError
        raise CompilerError(f"{path} is not a valid ONNX model: {exc}") from None
    return model


def unsupported_onnx_ops(model: Any) -> list[str]:
    """Op types of `model` that the installed relax ONNX frontend has no converter for."""
    import_tvm()
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = _get_convert_map()
    return sorted({node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx") and node.op_type not in known})


def _input_shape(model: Any, input_shape: tuple[int, ...] | None) -> tuple[str, tuple[int, ...]]:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [inp for inp in model.graph.input if inp.name not in initializers]
    if len(inputs) != 1:
        raise InvalidArgumentError(f"expected a model with one input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    declared = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    shape = tuple(input_shape) if input_shape is not None else declared
    if any(dim <= 0 for dim in shape) or len(shape) != len(declared):
        raise InvalidArgumentError(
            f"ONNX input '{inputs[0].name}' has shape {declared}; pass input_shape with every dimension fixed"
        )
    return inputs[0].name, shape


def onnx_to_relax(model: Any, input_shape: tuple[int, ...] | None = None) -> Any:
    """Import an ONNX model into relax with a fixed input shape; refuse unsupported ops by name."""
    import_tvm()
    from tvm.relax.frontend.onnx import from_onnx

    missing = unsupported_onnx_ops(model)
    if missing:
        raise CompilerError(f"the relax ONNX frontend cannot import these ops: {', '.join(missing)}")
    name, shape = _input_shape(model, input_shape)
    try:
        return from_onnx(model, shape_dict={name: list(shape)})
    except Exception as exc:
        raise CompilerError(f"relax ONNX import failed: {exc}") from None


def lower_onnx(path: str | Path, target: str, out_stem: str | Path, *, input_shape: tuple[int, ...] | None = None) -> TVMLibrary:
    """A user's ONNX file -> TVM library for the named target."""
    profile = get_target(target)
    module = onnx_to_relax(load_onnx(path), input_shape)
    return export_library(compile_relax(module, profile), profile, Path(out_stem))


def export_onnx(tflite_content: bytes, out_path: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """TFLite flatbuffer -> ONNX file via tf2onnx; an operation it cannot express is a CompilerError naming it."""
    try:
        import tf2onnx
    except ImportError:
        raise CompilerError("ONNX export needs tf2onnx: pip install 'hgen[compiler]'") from None
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp, _tf2onnx_log() as records:
        source = Path(tmp) / "model.tflite"
        source.write_bytes(tflite_content)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                tf2onnx.convert.from_tflite(str(source), opset=opset, output_path=str(out_path))
        except Exception as exc:
            out_path.unlink(missing_ok=True)
            raise CompilerError(f"tf2onnx could not convert the TFLite model: {exc}") from None
    if unsupported := _unsupported(records):  # tf2onnx writes them as-is (TFL_GELU): no invalid file in a bundle
        out_path.unlink(missing_ok=True)
        named = ", ".join(f"{op.removeprefix('TFL_')} ({op})" for op in unsupported)
        raise CompilerError(f"ONNX (opset {opset}, through tf2onnx) cannot express {named}")
    try:
        load_onnx(out_path)
    except CompilerError:
        out_path.unlink(missing_ok=True)
        raise
    return out_path


@contextlib.contextmanager
def _tf2onnx_log() -> Iterator[list[logging.LogRecord]]:
    """tf2onnx's log records while it converts. Its "ERROR:tf2onnx.tfonnx:Tensorflow op [...] is not supported"
    lines reached the terminal beside hgen's own message about them: they are kept off it, as TensorFlow's own
    logging is (`hgen.runtime.quiet` sets the `tensorflow` logger to ERROR unless --verbose)."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("tf2onnx")
    handler = _Collect(records)
    quiet = logging.getLogger("tensorflow").getEffectiveLevel() >= logging.ERROR
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = propagate and not quiet
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.NOTSET)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_UNSUPPORTED = re.compile(r"Unsupported ops: Counter\(\{(.*)\}\)")


def _unsupported(records: list[logging.LogRecord]) -> list[str]:
    """The op names of tf2onnx's "Unsupported ops: Counter({'TFL_GELU': 1})" record, if it logged one."""
    for record in records:
        if found := _UNSUPPORTED.search(record.getMessage()):
            return re.findall(r"'([^']+)'", found.group(1))
    return []


def run_onnxruntime(path: str | Path, batch: np.ndarray) -> np.ndarray:
    """Run an ONNX file with onnxruntime (CPU), one fixed-size batch per call, to check an export."""
    try:
        import onnxruntime
    except ImportError:
        raise CompilerError("checking ONNX needs onnxruntime: pip install onnxruntime") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else 1
    outputs = [session.run(None, {inp.name: batch[i : i + fixed]})[0] for i in range(0, len(batch), fixed)]
    return np.concatenate(outputs)
