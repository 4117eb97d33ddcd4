"""Apache TVM: the TFLite model through relax, compiled for the bundle's target profile into a shared library (or,
without the target's cross linker, an object archive the manifest says is unlinked)."""

from __future__ import annotations

from hgen.compiler.bundle.engines import BUNDLE_ENGINES, EngineJob, LoweredEngine, engine_entry
from hgen.compiler.lowering.tvm_relax import lower_tvm


@BUNDLE_ENGINES.register("tvm")
def lower_tvm_engine(job: EngineJob) -> LoweredEngine:
    stem = job.out_dir / f"model.{job.target}.{job.tflite.precision}"
    library = lower_tvm(job.tflite.content, job.target, stem)
    entry = engine_entry("tvm", library.path, job.tflite, library.format, library.machine)
    return LoweredEngine(entry, (library.message,) if library.message else ())
