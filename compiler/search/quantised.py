"""The winner as an int8 device runs it: lowered to full-int8 LiteRT, then calibrated, gated and measured on the
int8 model's own outputs.

Why: int8 is how a Pi or a phone stores and runs a model (4x less storage for weights and activations, Eq. 11 at
8 bits), but it moves logits. The deployed tau and temperature must be chosen for the logits the device computes,
and A and L reported for them, or the compile would promise accuracy the device never delivers. The search itself
ranks candidates on their float logits (lowering each would cost a conversion per candidate); only the winner is
quantised (on `calibration_images` of the training split), and the bundle ships that very model. E and T stay the
float model's estimates (no int8 energy or latency model): upper bounds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data import Split
from hgen.compiler.lowering.tflite import TFLiteModel, calibration_images, lower_tflite
from hgen.compiler.search.evaluator import Backbone, CandidateEvaluator, HeldOut
from hgen.compiler.search.final import Finalised
from hgen.compiler.search.objective import Demands, coefficients
from hgen.runtime.calibration import fit_temperature


def int8_logits(engine: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Dequantised logits of the int8 model through the device's LiteRT engine (its batch-1 graph); the data set
    is read `batch` images at a time (it may be a memory-mapped view)."""
    return np.concatenate([engine.run(np.asarray(x[start:start + batch], np.float32))
                           for start in range(0, len(x), batch)])


def quantise_final(evaluator: CandidateEvaluator, done: Finalised, demands: Demands, accuracy_confidence: float,
                   held_out: HeldOut, train: Split, out: Path) -> tuple[Finalised, TFLiteModel]:
    """Lower `done`'s model to int8 (written to OUT/model.int8.tflite; the bundle ships the returned model), re-fit
    the temperature on the calibration half of the validation split, choose tau again on the search half (when the
    search chose tau at all), measure on `held_out`: all on int8 logits."""
    from hgen.runtime.engines import open_engine

    tflite = lower_tflite(done.backbone.model, quantize="int8", representative_data=calibration_images(train))
    engine = open_engine("litert", tflite.save(out / "model.int8.tflite"))
    calibration = evaluator.calibration
    temperature = fit_temperature(int8_logits(engine, calibration.x), calibration.y)
    backbone: Backbone = replace(done.backbone, logits=int8_logits(engine, evaluator.search.split.x),
                                 temperature=temperature)
    candidate = done.candidate
    if candidate.tau_proposed is not None:
        coef = coefficients(demands, evaluator.device.battery_mah)
        candidate = replace(candidate, tau=evaluator.best_tau(backbone, candidate.tau, demands, coef,
                                                               accuracy_confidence).tau)
    logits = int8_logits(engine, held_out.split.x)
    measured = evaluator.measure(backbone, candidate.tau, held_out=held_out, logits=logits)
    return Finalised(backbone, candidate, measured, logits), tflite
