"""Inference engines for the device (`litert`, `tvm`, `null`): one module each, registered by name.

No TensorFlow here: LiteRT and the TVM runtime are imported lazily when an engine is opened.
"""

from hgen.runtime.engines.base import (
    ENGINES,
    Engine,
    EngineError,
    QuantParams,
    TensorSpec,
    engine_names,
    open_engine,
)

__all__ = ["ENGINES", "Engine", "EngineError", "QuantParams", "TensorSpec", "engine_names", "open_engine"]
