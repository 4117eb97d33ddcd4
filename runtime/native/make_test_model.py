"""ctest fixture: build a tiny relax model (no TensorFlow) for the host, plus its input and expected output.

Usage: python make_test_model.py OUT_DIR  ->  OUT_DIR/{model.so, input.bin, expected.bin}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def build(out_dir: Path) -> None:
    import tvm
    from tvm import relax

    weights = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)
    bias = np.array([0.5, -0.25, 0.125], np.float32)
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit(relax.op.add(relax.op.matmul(x, relax.const(weights)), relax.const(bias)))
            out = builder.emit_output(relax.op.nn.relu(y))
        builder.emit_func_output(out)
    executable = tvm.compile(builder.get(), target=tvm.target.Target({"kind": "llvm"}))
    out_dir.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(out_dir / "model.so"))
    inputs = np.array([[1.0, -2.0, 3.0, 0.5]], np.float32)
    inputs.tofile(out_dir / "input.bin")
    np.maximum(inputs @ weights + bias, 0).astype(np.float32).tofile(out_dir / "expected.bin")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
