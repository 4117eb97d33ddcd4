"""A tiny two-stage detector (H-Faster-RCNN's model for the digit canvases): model, targets, loss, training, calibration.

Backbone: four 3x3 conv blocks with three 2x2 poolings (64x64 -> an 8x8 feature grid, as the grid detector).
Stage 1, the region proposal network: a 3x3 conv, then per anchor slot a 1x1 conv to (objectness logit, box deltas).
Stage 2 per anchor slot: RoI pooling of the slot's anchor (an average over the anchor's window of the feature map,
stride 1: a fixed-size RoI pooled at every position), then a 1x1 two-layer head to (box deltas, P mixing logits,
P x (C + 1) class logits): the mixture density head of Eq. 7. Only Conv2D, pooling and Concatenate: LiteRT's builtin
operators take it (no crop_and_resize, no NMS in the graph); proposals, NMS and the people's prior anchors are the
runtime's numpy (`hgen.runtime.hdnn.faster_rcnn`, which documents the output form). Raw outputs, no activation.

Targets (`encode_targets`): per slot, the anchor's IoU with the true boxes. RPN: positive at IoU >= 0.5 or the best
slot of a box, negative below 0.3, ignored between. Head: the box's class at IoU >= 0.4 or the best slot, background
below 0.3 (weighted `NEGATIVE_WEIGHT`), ignored between; box deltas on positives. Loss: RPN binary cross-entropy and smooth L1, the head's
mixture negative log-likelihood -log sum_p pi^p softmax(mu^p)[y] and smooth L1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from hgen.compiler.data.detection import DetectionSplit
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.models import ModelConfig, check_shape, register_model
from hgen.compiler.models.detection_training import DETECTOR_TRAINING, DetectorTraining
from hgen.compiler.models.grid_detector import DOWNSAMPLE, grid_side
from hgen.runtime.calibration import softmax
from hgen.runtime.hdnn.faster_rcnn import (ANCHOR_SHAPES, BOX_FIELDS, COMPONENTS, anchor_boxes, box_deltas, corners,
                                           fields, split)

if TYPE_CHECKING:
    import keras

RPN_POSITIVE, RPN_NEGATIVE = 0.5, 0.3
HEAD_POSITIVE, HEAD_NEGATIVE = 0.4, 0.3
OBJECTNESS_PRIOR = -4.0  # ~2 of 576 slots hold a digit: start the RPN near p = 0.02 (as the grid detector)
BOX_WEIGHT = 2.0
NEGATIVE_WEIGHT = 0.05  # a background slot's share in the head loss: ~560 of 576 slots are background, and at
# weight 1 the head learnt "background" everywhere (19 % of positive slots classified); Faster R-CNN samples 1:3
MASK = 9  # y_true: the weight of the head's class target (0 ignored, NEGATIVE_WEIGHT background, 1 object)
ONE_HOT = 10  # y_true: the head's one-hot class (C + 1) starts here


class TwoStageDetectorConfig(ModelConfig):
    """Widths of the backbone's four conv blocks, the RPN conv and the per-slot head."""

    widths: tuple[int, int, int, int] = Field((16, 32, 48, 64), title="Filters of conv1..conv4")
    rpn_width: int = Field(64, ge=1, title="Filters of the RPN's 3x3 conv")
    head_width: int = Field(48, ge=1, title="Hidden units of each anchor slot's head")


def pool_window(shape: tuple[float, float], grid: int) -> tuple[int, int]:
    """The anchor's (height, width) in feature cells, rounded to odd sizes (a centred window)."""
    return tuple(max(1, 2 * int(round(v * grid / 2 - 0.5)) + 1) for v in (shape[1], shape[0]))  # type: ignore[return-value]


@register_model("two_stage_detector", TwoStageDetectorConfig, kind="faster_rcnn")  # not a classifier
def two_stage_detector(input_shape: tuple[int, int, int], num_classes: int,
                       config: TwoStageDetectorConfig = TwoStageDetectorConfig()) -> keras.Model:
    """backbone -> RPN (per slot objectness, deltas) and per-slot RoI pooling -> head (deltas, MDN); see module."""
    import keras
    from keras import layers

    input_shape = check_shape("two_stage_detector", input_shape, DOWNSAMPLE)
    side = grid_side(input_shape)
    grid = side // DOWNSAMPLE
    image = keras.Input(shape=input_shape, name="image")
    x = layers.Resizing(side, side, name="to_grid")(image) if input_shape[:2] != (side, side) else image
    for i, width in enumerate(config.widths, start=1):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        if i < 4:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    rpn = layers.Conv2D(config.rpn_width, 3, padding="same", activation="relu", name="rpn")(x)
    head_out = fields(num_classes) - 5
    rpn_outs = [layers.Conv2D(5, 1, name=f"proposal_{a}")(rpn) for a in range(len(ANCHOR_SHAPES))]
    heads = []
    for a, shape in enumerate(ANCHOR_SHAPES):
        roi = layers.AveragePooling2D(pool_window(shape, grid), strides=1, padding="same", name=f"roi_{a}")(x)
        hidden = layers.Conv2D(config.head_width, 1, activation="relu", name=f"fc_{a}")(
            layers.Concatenate(name=f"roi_cell_{a}")([roi, x]))
        heads.append(layers.Conv2D(head_out, 1, name=f"mdn_{a}")(hidden))
    # per slot first: one Concatenate of 18 inputs of two widths got a wrong gradient split in graph mode (TF 2.x)
    parts = [layers.Concatenate(name=f"slot_{a}")([r, h]) for a, (r, h) in enumerate(zip(rpn_outs, heads))]
    model = keras.Model(image, layers.Concatenate(name="slots")(parts), name="two_stage_detector")
    for a in range(len(ANCHOR_SHAPES)):
        bias = np.zeros(5, np.float32)
        bias[0] = OBJECTNESS_PRIOR
        model.get_layer(f"proposal_{a}").bias.assign(bias)
    return model


def _assign(anchors: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max IoU per slot [K], index of that box [K], whether the slot is some box's best [K])."""
    a = corners(anchors)
    width = np.clip(np.minimum(a[:, None, 2], gt[None, :, 2]) - np.maximum(a[:, None, 0], gt[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], gt[None, :, 3]) - np.maximum(a[:, None, 1], gt[None, :, 1]), 0, None)
    inter = width * height
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + \
        ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    best_of_box = np.zeros(len(a), bool)
    best_of_box[np.argmax(iou, axis=0)] = True
    return iou.max(axis=1), iou.argmax(axis=1), best_of_box


def encode_targets(boxes: Sequence[np.ndarray], grid: int, num_classes: int) -> np.ndarray:
    """True boxes per image ([k, 5] normalised corners + class) -> y_true [n, S, S, A * F] (module docstring)."""
    anchors = anchor_boxes(grid).reshape(-1, 4)
    width = fields(num_classes)
    out = np.zeros((len(boxes), len(anchors), width), np.float32)
    background = ONE_HOT + num_classes
    for i, rows in enumerate(boxes):
        rows = np.asarray(rows, np.float64).reshape(-1, 5)
        target = out[i]
        target[:, MASK] = NEGATIVE_WEIGHT
        target[:, background] = 1.0
        if not len(rows):
            continue
        iou, match, best = _assign(anchors, rows[:, :4])
        deltas = box_deltas(anchors, rows[match, :4])
        target[:, 0] = np.where((iou >= RPN_POSITIVE) | best, 1.0, np.where(iou < RPN_NEGATIVE, 0.0, -1.0))
        target[:, 1:5] = deltas
        head_positive = (iou >= HEAD_POSITIVE) | best
        target[:, 5:9] = deltas
        target[:, MASK] = np.where(head_positive, 1.0, np.where(iou < HEAD_NEGATIVE, NEGATIVE_WEIGHT, 0.0))
        target[head_positive, background] = 0.0
        target[np.flatnonzero(head_positive), ONE_HOT + rows[match[head_positive], 4].astype(np.int64)] = 1.0
    return out.reshape(len(boxes), grid, grid, len(ANCHOR_SHAPES) * width)


def _smooth_l1(diff: Any) -> Any:
    from keras import ops

    absolute = ops.abs(diff)
    return ops.sum(ops.where(absolute < 1.0, 0.5 * diff * diff, absolute - 0.5), axis=-1)


def make_loss(num_classes: int) -> Any:
    """The per-image loss of the module docstring for `num_classes` classes (keras.ops only)."""
    from keras import ops

    width, anchors = fields(num_classes), len(ANCHOR_SHAPES)

    def loss(y_true: Any, y_pred: Any) -> Any:
        shape = (-1, ops.shape(y_pred)[1], ops.shape(y_pred)[2], anchors, width)
        t, p = ops.reshape(y_true, shape), ops.reshape(y_pred, shape)
        label, z = t[..., 0], p[..., 0]
        rpn = ops.where(label >= 0, label * ops.softplus(-z) + (1.0 - label) * ops.softplus(z), 0.0)
        rpn_pos = ops.cast(label > 0, "float32")
        rpn_box = rpn_pos * _smooth_l1(p[..., 1:5] - t[..., 1:5])
        one_hot = t[..., ONE_HOT:ONE_HOT + num_classes + 1]
        log_pi = ops.log_softmax(p[..., BOX_FIELDS:BOX_FIELDS + COMPONENTS], axis=-1)
        mu = ops.reshape(p[..., BOX_FIELDS + COMPONENTS:], (*shape[:4], COMPONENTS, num_classes + 1))
        log_class = ops.sum(ops.log_softmax(mu, axis=-1) * one_hot[..., None, :], axis=-1)
        mdn = -ops.logsumexp(log_pi + log_class, axis=-1) * t[..., MASK]
        head_pos = t[..., MASK] * (1.0 - one_hot[..., -1])
        head_box = head_pos * _smooth_l1(p[..., 5:9] - t[..., 5:9])
        return ops.sum(rpn + mdn + BOX_WEIGHT * (rpn_box + head_box), axis=(1, 2, 3))

    return loss


@dataclass(frozen=True)
class TwoStageTrainConfig:
    """Adam on the two-stage loss (defaults: see `tools/bench/hfrcnn.py` for what they reach on 2 cores)."""

    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    verbose: int = 0


def num_classes_of(model: Any) -> int:
    """C from the model's output width (A * (9 + P (C + 2)))."""
    return (int(model.outputs[0].shape[-1]) // len(ANCHOR_SHAPES) - BOX_FIELDS) // COMPONENTS - 2


def fit_targets(model: Any, x: np.ndarray, targets: np.ndarray, config: TwoStageTrainConfig) -> float:
    """Fit `model` to y_true targets (`encode_targets` form); returns wall seconds."""
    import keras

    expected = tuple(model.outputs[0].shape[1:])
    if targets.shape[1:] != expected or len(targets) != len(x):
        raise InvalidArgumentError(f"targets {targets.shape} do not match {len(x)} samples of output {expected}")
    keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=make_loss(num_classes_of(model)))
    start = time.perf_counter()
    model.fit(x, targets, batch_size=config.batch_size, epochs=config.epochs, verbose=config.verbose, shuffle=True)
    return time.perf_counter() - start


def train_two_stage(model: Any, split_: DetectionSplit, num_classes: int,
                    config: TwoStageTrainConfig = TwoStageTrainConfig()) -> float:
    """Train on the split's true boxes; returns wall seconds."""
    grid = int(model.outputs[0].shape[1])
    return fit_targets(model, split_.x, encode_targets(split_.boxes, grid, num_classes), config)


def predict_slots(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


@dataclass(frozen=True)
class LabelledSlots:
    """The slots a calibration loss reads, gathered once: their mixing weights [n, K], class logits [n, K, C]
    and one-hot classes [n, C], over `images` canvases. Only the class softmax depends on the temperature, so a
    grid of temperatures re-computes it on these few slots instead of on every slot of every canvas."""

    mixing: np.ndarray
    class_logits: np.ndarray
    one_hot: np.ndarray
    images: int


def labelled_slots(outputs: np.ndarray, targets: np.ndarray, objects_only: bool = True) -> LabelledSlots:
    slots = split(outputs)
    classes = slots.class_logits.shape[-1]
    encoded = np.asarray(targets, np.float64).reshape(*slots.objectness.shape, -1)
    one_hot = encoded[..., ONE_HOT:ONE_HOT + classes]
    mask = encoded[..., MASK] > 0
    if objects_only and np.any(mask & (one_hot[..., -1] == 0)):  # a split with no object: every labelled slot
        mask &= one_hot[..., -1] == 0
    return LabelledSlots(softmax(slots.mixing[mask]), slots.class_logits[mask], one_hot[mask], len(outputs))


def slots_nll(slots: LabelledSlots, temperature: float) -> float:
    probs = softmax(slots.class_logits, temperature)
    likelihood = np.sum(slots.mixing * np.sum(probs * slots.one_hot[:, None, :], axis=-1), axis=-1)
    return float(-np.log(np.clip(likelihood, 1e-12, None)).sum() / max(slots.images, 1))


def mixture_nll(outputs: np.ndarray, targets: np.ndarray, temperature: float, objects_only: bool = True) -> float:
    """The head's mixture NLL at `temperature` (it divides the class logits mu) on the object slots (the head's
    positives), or with `objects_only=False` on every labelled slot. Objects only by default: the gate asks whether
    the answer about an object is right, and the background slots (hundreds per canvas, nearly all easy, weighted
    `NEGATIVE_WEIGHT` in training) would set T alone: fitted on them T came out 0.3-0.4, sharpening every class
    distribution so that misread digits on low-resolution or dark canvases looked certain (2-6 % below tau 0.3)."""
    return slots_nll(labelled_slots(outputs, targets, objects_only), temperature)


def fit_temperature(outputs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (0.25..4, log grid) minimising the head's NLL on the objects of held-out data (Eq. 2)."""
    candidates = np.exp(np.linspace(np.log(0.25), np.log(4.0), 49))
    slots = labelled_slots(outputs, targets)
    losses = [slots_nll(slots, float(t)) for t in candidates]
    return float(candidates[int(np.argmin(losses))])


def slots_temperature(outputs: np.ndarray, boxes: Sequence[np.ndarray], num_classes: int) -> float:
    """The temperature of held-out outputs [n, grid, grid, ...] against their true boxes."""
    return fit_temperature(outputs, encode_targets(boxes, int(outputs.shape[1]), num_classes))


def calibrate_two_stage(model: Any, val: DetectionSplit, num_classes: int) -> float:
    return slots_temperature(predict_slots(model, val.x), val.boxes, num_classes)


DETECTOR_TRAINING.add("faster_rcnn", DetectorTraining(
    lambda model, split, classes, epochs, seed: train_two_stage(model, split, classes,
                                                                TwoStageTrainConfig(epochs=epochs, seed=seed)),
    slots_temperature, predict_slots))
