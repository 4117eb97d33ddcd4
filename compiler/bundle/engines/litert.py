"""LiteRT: the device runs the bundle's TFLite file itself."""

from __future__ import annotations

from hgen.compiler.bundle.engines import BUNDLE_ENGINES, EngineJob, LoweredEngine, engine_entry


@BUNDLE_ENGINES.register("litert")
def lower_litert(job: EngineJob) -> LoweredEngine:
    return LoweredEngine(engine_entry("litert", job.tflite_path, job.tflite))
