"""How the detection compile (`hgen.compiler.compile_detect`) trains, calibrates and runs a zoo detector, per H-DNN
kind: each detector's model file registers its kind's entry (`grid_detector.py`: yolo, `two_stage_detector.py`:
faster_rcnn), so the compile never names a kind; a new detector kind adds its entry beside its model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hgen.compiler.errors import UnknownNameError
from hgen.runtime.registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from hgen.compiler.data.detection import DetectionSplit


@dataclass(frozen=True)
class DetectorTraining:
    """train(model, split, num_classes, epochs, seed) -> wall seconds; temperature(outputs, boxes, num_classes) ->
    the temperature fitted on held-out outputs (of the Keras model, or of the int8 model a device runs);
    predict(model, x) -> raw outputs in the kind's form (what the runtime's kind reads); unlearnt(model, split) ->
    a warning about true boxes the model cannot hold (None: it holds them all), for the compile's log."""

    train: Callable[[Any, DetectionSplit, int, int, int], float]
    temperature: Callable[[np.ndarray, Sequence[np.ndarray], int], float]
    predict: Callable[[Any, np.ndarray], np.ndarray]
    unlearnt: Callable[[Any, DetectionSplit], str | None] = lambda model, split: None


# Filled by the zoo's detector files, so the registry discovers the zoo package.
DETECTOR_TRAINING: Registry[DetectorTraining] = Registry("detector training", UnknownNameError,
                                                         package="hgen.compiler.models")


def detector_training(kind: str) -> DetectorTraining:
    """The entry of `kind` (its model file registers it when the zoo is loaded)."""
    return DETECTOR_TRAINING.get(kind)
