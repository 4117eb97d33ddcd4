"""T_infer (Eq. 10) measured the way the device runs the model: LiteRT, batch 1, median after warm-up."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def litert_latency_ms(model: Any, repeats: int = 30, warmup: int = 5) -> float:
    """Lower the Keras model to float TFLite and time `Engine.run` on this host (median, ms)."""
    from hgen.compiler.lowering.tflite import lower_tflite
    from hgen.runtime.engines.base import open_engine

    tflite = lower_tflite(model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(tflite.content)
        engine = open_engine("litert", path)
        sample = np.zeros(engine.input_spec.shape, np.float32)
        engine.warm_up(warmup)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.run(sample)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)
