"""H-Faster-RCNN (paper sections 4.1.3, 4.2.2): a two-stage detector with a mixture density class head, Eq. 7
confidence, and fusion that places prior anchors where people pointed (Eq. 8) and lets the second stage score them.

Output form (what `hgen.compiler.models.two_stage_detector` emits, float32 [n, S, S, A * F]): per cell of the S x S
feature grid and per anchor slot a (A = `len(ANCHOR_SHAPES)`, square-ish shapes at three sizes), F values:

    0       RPN objectness logit (stage 1)
    1-4     RPN box deltas (dx, dy, dw, dh) of the slot's anchor (stage 1)
    5-8     head box deltas of the slot's anchor (stage 2)
    9..     P mixing logits, then P x (C + 1) class logits (stage 2's mixture density head; index C = background)

Stage 2 runs on the RoI of each anchor slot: in the graph its RoI pooling is an average over the anchor's window of
the feature map at stride 1 (a fixed-size RoI pooled at every position is a convolution), so the head's output for
*any* proposal of a slot's shape at any cell is already there. The device therefore runs one model; proposals, NMS
and the people's prior anchors are numpy here, reading the head where a proposal lies.

Eq. 7: a proposal's confidence is c = sum_p pi^p max softmax(mu^p / T) (pi = softmax of the mixing logits, T the
calibrated temperature, fitted on the objects of the validation canvases, background included in the max: "surely
nothing" is certain too). The image's c is that of its least
certain proposal among the RPN's top `TOP_PROPOSALS` (as H-YOLO's least certain cell: one unsure object is enough
to make the image's answer wrong, and a near-miss proposal must count). The gate is c < tau.

Fusion: answers are the people's attention regions as aggregated by `region_gmm` ([k, 5]: normalised corners and
the component's mixture weight, Eq. 8 with the number of components by AIC), or None (the model's answer stands).
The second stage runs on the RPN's proposals and on prior anchors where people pointed: a region that an RPN
proposal's head box overlaps (IoU >= CONFIRM_IOU) confirms the model's own find there, and that proposal's box and
class distribution answer it (its box was refined from a proposal that fits the object). Elsewhere,
at each component the device places prior anchors: the component's own box and 1:3 and 3:1 anchors at three sizes
(half, equal and double the component's area side). The second stage scores each (the head at the cell holding
the anchor's centre, in the slot whose shape overlaps it most); the component's class distribution is the mean of
the mixture's foreground distributions over its prior anchors (score = the top class's probability, class = its
index), its box the head's refined box of the component's own anchor. (Taking the single most probable anchor
instead picked confident slots with poor boxes: mAP@0.5 0.47 vs 0.49 on 400 test canvases with true regions.)
People saw the whole image, so model boxes where nobody pointed are dropped. An empty answer (no component: every
person said "nothing uncertain here / no object") is the model's answer standing, as None: the device keeps its own
proposals (people were asked where the model should look again, and pointed nowhere).

Regions carry no class: the class always comes from the device's second stage. Labour per sample is Eq. 9's
estimate from the confidence (`difficulty_from_confidence`), as H-YOLO's; a retrain is due after 1,000 new labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hgen.runtime.calibration import softmax
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.hdnn import KINDS, FusionParams, difficulty_from_confidence
from hgen.runtime.hdnn.yolo import Detections, box_iou, nms
from hgen.runtime.labour import DifficultyEstimator

COMPONENTS = 3  # P of the mixture density head
ANCHOR_SIZES = (0.2, 0.3, 0.45)  # sqrt(area) as a share of the image side
ANCHOR_ASPECTS = (0.5, 1.0, 2.0)  # width / height of the model's own anchors
ANCHOR_SHAPES = tuple((s * np.sqrt(a), s / np.sqrt(a)) for s in ANCHOR_SIZES for a in ANCHOR_ASPECTS)  # (w, h)
PRIOR_ASPECTS = (1 / 3, 3.0)  # the people's prior anchors (paper): 1:3 and 3:1 ...
PRIOR_SCALES = (0.5, 1.0, 2.0)  # ... at three sizes around the component's own
BOX_FIELDS = 9  # rpn objectness, rpn deltas, head deltas
TOP_PROPOSALS = 8
RPN_NMS_IOU = 0.7
SCORE_THRESHOLD = 0.5
CONFIRM_IOU = 0.5  # an RPN proposal whose head box overlaps a people's region this much is the model's own find there
NMS_IOU = 0.5
MAX_LOG_SCALE = np.log(4.0)  # dw, dh clip: a box grows or shrinks at most 4x from its anchor


def fields(num_classes: int) -> int:
    """F: the values per anchor slot for `num_classes` classes."""
    return BOX_FIELDS + COMPONENTS * (num_classes + 2)


@dataclass(frozen=True)
class Slots:
    """The output split per anchor slot: rpn objectness [n, S, S, A], rpn and head deltas [n, S, S, A, 4],
    mixing logits [n, S, S, A, P], class logits [n, S, S, A, P, C + 1]."""

    objectness: np.ndarray
    rpn_deltas: np.ndarray
    head_deltas: np.ndarray
    mixing: np.ndarray
    class_logits: np.ndarray

    @property
    def grid(self) -> int:
        return int(self.objectness.shape[1])


def split(outputs: np.ndarray) -> Slots:
    """Checked view of the raw output [n, S, S, A * F] by field."""
    out = np.asarray(outputs, dtype=np.float64)
    anchors = len(ANCHOR_SHAPES)
    if out.ndim != 4 or out.shape[1] != out.shape[2] or out.shape[3] % anchors:
        raise InvalidInputError(f"H-Faster-RCNN outputs must be [n, S, S, {anchors} * F], got shape {out.shape}")
    width = out.shape[3] // anchors
    classes = (width - BOX_FIELDS) // COMPONENTS - 1
    if classes < 2 or fields(classes - 1) != width:
        raise InvalidInputError(f"{width} values per anchor slot is not {BOX_FIELDS} + {COMPONENTS} x (classes + 2)")
    out = out.reshape(*out.shape[:3], anchors, width)
    mdn = out[..., BOX_FIELDS:]
    return Slots(out[..., 0], out[..., 1:5], out[..., 5:9], mdn[..., :COMPONENTS],
                 mdn[..., COMPONENTS:].reshape(*out.shape[:4], COMPONENTS, classes))


def mixture(slots: Slots, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(pi [..., P], per-component class probabilities softmax(mu / T) [..., P, C + 1])."""
    return softmax(slots.mixing), softmax(slots.class_logits, temperature)


def mdn_confidence(pi: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Eq. 7: c = sum_p pi^p max softmax(mu^p), over the last axes (P and P x classes)."""
    return np.sum(pi * probs.max(axis=-1), axis=-1)


def class_probs(pi: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """The mixture's class distribution sum_p pi^p softmax(mu^p): [..., C + 1]."""
    return np.sum(pi[..., None] * probs, axis=-2)


def anchor_boxes(grid: int) -> np.ndarray:
    """Normalised (cx, cy, w, h) of every slot: [S, S, A, 4]."""
    centres = (np.arange(grid) + 0.5) / grid
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    shapes = np.asarray(ANCHOR_SHAPES)
    out = np.empty((grid, grid, len(shapes), 4))
    out[..., 0], out[..., 1] = cx[..., None], cy[..., None]
    out[..., 2:] = shapes
    return out


def apply_deltas(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Faster R-CNN's box parameterisation: (cx + dx w, cy + dy h, w e^dw, h e^dh) -> clipped corners [..., 4]."""
    cx = anchors[..., 0] + deltas[..., 0] * anchors[..., 2]
    cy = anchors[..., 1] + deltas[..., 1] * anchors[..., 3]
    w = anchors[..., 2] * np.exp(np.clip(deltas[..., 2], -MAX_LOG_SCALE, MAX_LOG_SCALE))
    h = anchors[..., 3] * np.exp(np.clip(deltas[..., 3], -MAX_LOG_SCALE, MAX_LOG_SCALE))
    return np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1), 0.0, 1.0)


def box_deltas(anchors: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The inverse of `apply_deltas` for corner boxes (training targets): [..., 4]."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
    return np.stack([(cx - anchors[..., 0]) / anchors[..., 2], (cy - anchors[..., 1]) / anchors[..., 3],
                     np.log(np.maximum(w, 1e-6) / anchors[..., 2]), np.log(np.maximum(h, 1e-6) / anchors[..., 3])],
                    axis=-1)


def corners(centre_boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x_min, y_min, x_max, y_max)."""
    c = np.asarray(centre_boxes, np.float64)
    return np.concatenate([c[..., :2] - c[..., 2:] / 2, c[..., :2] + c[..., 2:] / 2], axis=-1)


def proposals(slots: Slots, image: int, temperature: float) -> np.ndarray:
    """Stage 1 of one image: flat slot indices of the RPN's top proposals after NMS (best objectness first)."""
    boxes = apply_deltas(anchor_boxes(slots.grid).reshape(-1, 4), slots.rpn_deltas[image].reshape(-1, 4))
    scores = slots.objectness[image].reshape(-1) / temperature  # sigmoid is monotonic: rank the logits
    keep: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        if not keep or box_iou(boxes[index], boxes[keep]).max() < RPN_NMS_IOU:
            keep.append(int(index))
            if len(keep) == TOP_PROPOSALS:
                break
    return np.array(keep, np.int64)


@dataclass(frozen=True)
class Scored:
    """Stage 2 at some slots of one image: head boxes [k, 4], best foreground class [k], its probability [k],
    and the Eq. 7 confidence [k]."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    confidence: np.ndarray


def second_stage(slots: Slots, image: int, index: np.ndarray, temperature: float) -> Scored:
    """The head's answer at flat slot indices `index` of `image` (its deltas refine the slots' anchors)."""
    flat = slots.grid * slots.grid * len(ANCHOR_SHAPES)
    pi = softmax(slots.mixing[image].reshape(flat, COMPONENTS)[index])
    probs = softmax(slots.class_logits[image].reshape(flat, COMPONENTS, -1)[index], temperature)
    boxes = apply_deltas(anchor_boxes(slots.grid).reshape(-1, 4)[index], slots.head_deltas[image].reshape(-1, 4)[index])
    foreground = class_probs(pi, probs)[:, :-1]
    return Scored(boxes, foreground.argmax(axis=1), foreground.max(axis=1), mdn_confidence(pi, probs))


def predict_image(slots: Slots, image: int, temperature: float, score_threshold: float) -> Detections:
    scored = second_stage(slots, image, proposals(slots, image, temperature), temperature)
    keep = scored.scores >= score_threshold
    return nms(Detections(scored.boxes[keep], scored.classes[keep], scored.scores[keep]), NMS_IOU)


def prior_anchors(region: np.ndarray) -> np.ndarray:
    """The prior anchors (cx, cy, w, h) placed at one people's region (corners): the region itself, then 1:3 and
    3:1 anchors at half, equal and double its area side, all centred on it. [1 + 6, 4]."""
    x0, y0, x1, y1 = (float(v) for v in region[:4])
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    side = np.sqrt(w * h)
    shapes = [(w, h)] + [(side * s * np.sqrt(a), side * s / np.sqrt(a)) for s in PRIOR_SCALES for a in PRIOR_ASPECTS]
    return np.array([(cx, cy, sw, sh) for sw, sh in shapes], np.float64)


def slot_of(anchors: np.ndarray, grid: int) -> np.ndarray:
    """Flat slot index per anchor (cx, cy, w, h): the cell holding its centre, the slot shape overlapping it most."""
    col = np.clip((anchors[:, 0] * grid).astype(np.int64), 0, grid - 1)
    row = np.clip((anchors[:, 1] * grid).astype(np.int64), 0, grid - 1)
    shapes = np.asarray(ANCHOR_SHAPES)
    inter = np.minimum(anchors[:, None, 2], shapes[None, :, 0]) * np.minimum(anchors[:, None, 3], shapes[None, :, 1])
    union = anchors[:, None, 2] * anchors[:, None, 3] + shapes[None, :, 0] * shapes[None, :, 1] - inter
    shape = np.argmax(inter / union, axis=1)
    return (row * grid + col) * len(shapes) + shape


def people_regions(answer: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """An aggregated answer [k, 5] (normalised x_min, y_min, x_max, y_max, weight), checked."""
    rows = np.asarray(answer, dtype=np.float64).reshape(-1, 5)
    if rows.size and (np.any(rows[:, 2] <= rows[:, 0]) or np.any(rows[:, 3] <= rows[:, 1])):
        raise InvalidInputError("people's regions must have x_max > x_min and y_max > y_min")
    return rows


def confirmed_proposal(scored: Scored, region: np.ndarray) -> int | None:
    """The RPN proposal people confirmed at `region` (head box IoU >= CONFIRM_IOU; the most probable object among
    several), or None."""
    if not len(scored.boxes):
        return None
    hits = np.flatnonzero(box_iou(np.asarray(region[:4], np.float64), scored.boxes) >= CONFIRM_IOU)
    return int(hits[np.argmax(scored.scores[hits])]) if len(hits) else None


def fuse_image(slots: Slots, image: int, regions: np.ndarray, temperature: float,
               score_threshold: float | None = None) -> Detections:
    """The detections at the people's regions (module docstring): per region its top class, or with
    `score_threshold` every class at least that probable (a ranked list, as `detect` gives mAP)."""
    found = []
    flat = slots.grid * slots.grid * len(ANCHOR_SHAPES)
    rpn = proposals(slots, image, temperature)
    scored = second_stage(slots, image, rpn, temperature)
    for region in people_regions(regions):
        hit = confirmed_proposal(scored, region)
        index = rpn[[hit]] if hit is not None else slot_of(prior_anchors(region), slots.grid)
        pi = softmax(slots.mixing[image].reshape(flat, COMPONENTS)[index])
        probs = softmax(slots.class_logits[image].reshape(flat, COMPONENTS, -1)[index], temperature)
        foreground = class_probs(pi, probs)[:, :-1].mean(axis=0)
        box = second_stage(slots, image, index[:1], temperature).boxes[0]
        classes = ([int(foreground.argmax())] if score_threshold is None
                   else np.flatnonzero(foreground >= score_threshold).tolist())
        found += [(box, c, float(foreground[c])) for c in classes]
    if not found:
        return Detections.empty()
    boxes, classes, scores = (np.array(v) for v in zip(*found))
    fused = Detections(boxes.reshape(-1, 4), classes.astype(np.int64), scores.astype(np.float64))
    return fused.take(np.argsort(-fused.scores, kind="stable"))


class FasterRCNNKind:
    """The paper's H-Faster-RCNN (section 4.1.3): two-stage detector + MDN confidence gate + prior-anchor fusion."""

    name = "faster_rcnn"
    proto_enum = "HDNN_KIND_FASTER_RCNN"
    label = "regions"
    aggregator = "region_gmm"
    view = "regions"
    retrain_threshold = 1000
    score_threshold = SCORE_THRESHOLD

    def output_channels(self, num_labels: int) -> int:
        return len(ANCHOR_SHAPES) * fields(num_labels)

    def confidence(self, outputs: np.ndarray, params: FusionParams) -> np.ndarray:
        slots = split(outputs)
        return np.array([second_stage(slots, i, proposals(slots, i, params.temperature), params.temperature)
                         .confidence.min() for i in range(slots.objectness.shape[0])])

    def predict(self, outputs: np.ndarray, params: FusionParams) -> list[Detections]:
        return self.detect(outputs, params, self.score_threshold)

    def detect(self, outputs: np.ndarray, params: FusionParams, score_threshold: float) -> list[Detections]:
        slots = split(outputs)
        return [predict_image(slots, i, params.temperature, score_threshold) for i in range(slots.objectness.shape[0])]

    def fuse(self, outputs: np.ndarray, answers: Sequence[np.ndarray | None], params: FusionParams) -> list[Detections]:
        slots = split(outputs)
        if len(answers) != slots.objectness.shape[0]:
            raise InvalidInputError(f"{slots.objectness.shape[0]} model outputs but {len(answers)} answers")
        return [predict_image(slots, i, params.temperature, self.score_threshold) if answer is None
                or not len(people_regions(answer)) else fuse_image(slots, i, answer, params.temperature)
                for i, answer in enumerate(answers)]

    def difficulty(self, outputs: np.ndarray, confidence: np.ndarray, params: FusionParams,
                   estimator: DifficultyEstimator) -> np.ndarray:
        return difficulty_from_confidence(confidence)


KINDS.add("faster_rcnn", FasterRCNNKind())
