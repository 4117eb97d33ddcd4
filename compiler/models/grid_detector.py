"""A tiny YOLO-style grid detector (H-YOLO's backbone for the synthetic digit canvases): model, targets, loss, training.

Four 3x3 conv blocks with three 2x2 poolings turn a 64x64 canvas into an 8x8 grid (other sizes: see the builder);
a 1x1 conv gives per cell the raw output `hgen.runtime.hdnn.yolo` decodes (objectness logit, x, y, w, h logits,
class logits). Raw outputs, no activation in the graph: the runtime applies the temperature and sigmoid/softmax, as
H-CNN's logits.

Loss (YOLO v1 style, one object per cell): binary cross-entropy of the objectness on every cell, and where the
target holds an object (weighted by its objectness, so soft teacher targets work) squared error of the sigmoid box
values times `COORD_WEIGHT` plus cross-entropy of the class distribution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from hgen.compiler.data.detection import DetectionSplit
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.models import ModelConfig, check_shape, register_model
from hgen.compiler.models.detection_training import DETECTOR_TRAINING, DetectorTraining
from hgen.runtime.hdnn.yolo import BOX_FIELDS, decode_grid

if TYPE_CHECKING:
    import keras

COORD_WEIGHT = 5.0
DOWNSAMPLE = 8  # three 2x2 poolings
OBJECTNESS_PRIOR = -4.0  # initial objectness logit: ~2 of 64 cells hold a digit, so start near p = 0.02


class GridDetectorConfig(ModelConfig):
    """Widths of the four 3x3 conv blocks and the objectness logit the head starts at."""

    # The detector a detection compile builds when no model is named (`compile_detect.default_detector`): the
    # smallest and fastest to train; marked here so the compile names no model or kind.
    default_detector: ClassVar[bool] = True

    widths: tuple[int, int, int, int] = Field((16, 32, 48, 64), title="Filters of conv1..conv4")
    objectness_prior: float = Field(OBJECTNESS_PRIOR, title="Initial objectness logit (prior share of object cells)")


def grid_side(input_shape: tuple[int, int, int]) -> int:
    """The square side the network sees: the input's longer side rounded up to a multiple of 8."""
    return -(-max(input_shape[0], input_shape[1]) // DOWNSAMPLE) * DOWNSAMPLE


@register_model("grid_detector", GridDetectorConfig, kind="yolo")  # not a classifier: compile skips it
def grid_detector(input_shape: tuple[int, int, int], num_classes: int,
                  config: GridDetectorConfig = GridDetectorConfig()) -> keras.Model:
    """conv3x3(16)-pool-conv3x3(32)-pool-conv3x3(48)-pool-conv3x3(64)-conv1x1(5 + C), at any input size.

    An input that is not a square with sides divisible by 8 is first resized (stretched) to one: the runtime decodes
    square grids, and a stretch keeps normalised box coordinates, so `encode_targets` stays exact.
    The objectness bias starts at the prior share of object cells (as RetinaNet's): from 0 the empty cells' loss
    swamps the first hundreds of steps, and a short training learns little but "nothing here".
    """
    import keras
    from keras import layers

    input_shape = check_shape("grid_detector", input_shape, DOWNSAMPLE)
    side = grid_side(input_shape)
    resize = [layers.Resizing(side, side, name="to_grid")] if input_shape[:2] != (side, side) else []
    c1, c2, c3, c4 = config.widths
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape, name="image"),
            *resize,
            layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Conv2D(c3, 3, padding="same", activation="relu", name="conv3"),
            layers.MaxPooling2D(2, name="pool3"),
            layers.Conv2D(c4, 3, padding="same", activation="relu", name="conv4"),
            layers.Conv2D(BOX_FIELDS + num_classes, 1, name="grid"),
        ],
        name="grid_detector",
    )
    head = model.get_layer("grid")
    bias = np.zeros(BOX_FIELDS + num_classes, np.float32)
    bias[0] = config.objectness_prior
    head.bias.assign(bias)
    return model


def encode_targets(boxes: Sequence[np.ndarray], grid: int, num_classes: int) -> np.ndarray:
    """Boxes per image ([k, 5] normalised corners + class) -> targets [n, S, S, 5 + C] in the model's output form.

    A box belongs to the cell holding its centre; a second box in the same cell is dropped (`shared_cells` counts
    them: the compile warns when a user's data has any).
    """
    targets = np.zeros((len(boxes), grid, grid, BOX_FIELDS + num_classes), np.float32)
    for i, rows in enumerate(boxes):
        for x0, y0, x1, y1, cls in np.asarray(rows, np.float64).reshape(-1, 5):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            col, row = min(int(cx * grid), grid - 1), min(int(cy * grid), grid - 1)
            if targets[i, row, col, 0]:
                continue
            targets[i, row, col, :BOX_FIELDS] = (1.0, cx * grid - col, cy * grid - row, x1 - x0, y1 - y0)
            targets[i, row, col, BOX_FIELDS + int(cls)] = 1.0
    return targets


def shared_cells(boxes: Sequence[np.ndarray], grid: int) -> int:
    """How many boxes `encode_targets` drops: centred in a cell another box of their image already took."""
    dropped = 0
    for rows in boxes:
        corners = np.asarray(rows, np.float64).reshape(-1, 5)[:, :4]
        cells = np.minimum((((corners[:, :2] + corners[:, 2:]) / 2) * grid).astype(np.int64), grid - 1)
        dropped += len(cells) - len(np.unique(cells, axis=0))
    return dropped


def unlearnt_boxes(model: Any, split: DetectionSplit) -> str | None:
    """The compile's warning when training boxes share a grid cell (crowded scenes, small objects)."""
    grid = int(model.outputs[0].shape[1])
    dropped, total = shared_cells(split.boxes, grid), sum(len(b) for b in split.boxes)
    if not dropped:
        return None
    return (f"{dropped} of {total} training boxes share a cell of the {grid}x{grid} grid with another box and are "
            "not learnt (one box per cell): a larger input (?size=) gives a finer grid")


def soft_targets(outputs: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """A teacher's raw output -> targets in the same form (objectness and class probabilities, sigmoid box values)."""
    from hgen.runtime.hdnn.yolo import sigmoid

    cells = decode_grid(outputs, temperature)
    box = sigmoid(np.asarray(outputs, np.float64)[..., 1:BOX_FIELDS])
    return np.concatenate([cells.objectness[..., None], box, cells.class_probs], axis=-1).astype(np.float32)


def detection_loss(y_true: Any, y_pred: Any) -> Any:
    """Per-image loss (see the module docstring); keras.ops only, so any backend trains it."""
    from keras import ops

    obj_t, obj_z = y_true[..., 0], y_pred[..., 0]
    bce = obj_t * ops.softplus(-obj_z) + (1.0 - obj_t) * ops.softplus(obj_z)
    coords = ops.sum(ops.square(ops.sigmoid(y_pred[..., 1:BOX_FIELDS]) - y_true[..., 1:BOX_FIELDS]), axis=-1)
    cls = -ops.sum(y_true[..., BOX_FIELDS:] * ops.log_softmax(y_pred[..., BOX_FIELDS:], axis=-1), axis=-1)
    per_cell = bce + obj_t * (COORD_WEIGHT * coords + cls)
    return ops.sum(per_cell, axis=(1, 2))


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Adam on the detection loss; defaults reach mAP@0.5 ~0.7 on 1,500 canvases in about 8 s on 2 cores."""

    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    verbose: int = 0


def fit_targets(model: Any, x: np.ndarray, targets: np.ndarray, config: DetectorTrainConfig) -> float:
    """Fit `model` to targets in its own output form (hard, soft or mixed); returns wall seconds."""
    import keras

    expected = tuple(model.outputs[0].shape[1:])
    if targets.shape[1:] != expected or len(targets) != len(x):
        raise InvalidArgumentError(f"targets {targets.shape} do not match {len(x)} samples of output {expected}")
    keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=detection_loss)
    start = time.perf_counter()
    model.fit(x, targets, batch_size=config.batch_size, epochs=config.epochs, verbose=config.verbose, shuffle=True)
    return time.perf_counter() - start


def train_detector(model: Any, split: DetectionSplit, num_classes: int,
                   config: DetectorTrainConfig = DetectorTrainConfig()) -> float:
    """Train on the split's true boxes; returns wall seconds."""
    grid = int(model.outputs[0].shape[1])
    return fit_targets(model, split.x, encode_targets(split.boxes, grid, num_classes), config)


def predict_grid(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def grid_nll(outputs: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Objectness BCE over all cells plus class cross-entropy on object cells, at `temperature`."""
    cells = decode_grid(outputs, temperature)
    p = np.clip(cells.objectness, 1e-7, 1 - 1e-7)
    obj = targets[..., 0]
    bce = -(obj * np.log(p) + (1 - obj) * np.log(1 - p))
    cls = -(targets[..., BOX_FIELDS:] * np.log(np.clip(cells.class_probs, 1e-12, 1.0))).sum(axis=-1) * obj
    return float((bce + cls).sum() / max(len(outputs), 1))


def fit_grid_temperature(outputs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (0.25..4, log grid) that minimises the grid NLL on held-out data (calibration, Eq. 2)."""
    candidates = np.exp(np.linspace(np.log(0.25), np.log(4.0), 49))
    losses = [grid_nll(outputs, targets, float(t)) for t in candidates]
    return float(candidates[int(np.argmin(losses))])


def grid_temperature(outputs: np.ndarray, boxes: Sequence[np.ndarray], num_classes: int) -> float:
    """The temperature of held-out outputs [n, grid, grid, ...] against their true boxes."""
    return fit_grid_temperature(outputs, encode_targets(boxes, int(outputs.shape[1]), num_classes))


def calibrate_detector(model: Any, val: DetectionSplit, num_classes: int) -> float:
    return grid_temperature(predict_grid(model, val.x), val.boxes, num_classes)



DETECTOR_TRAINING.add("yolo", DetectorTraining(
    lambda model, split, classes, epochs, seed: train_detector(model, split, classes,
                                                                DetectorTrainConfig(epochs=epochs, seed=seed)),
    grid_temperature, predict_grid, unlearnt_boxes))
