"""Issue 21: the two-stage detector's temperature is fitted on the object slots, not on the background slots that
outnumber them (numpy only). Background right but unsure, digits sure but half of them wrong: fitted on every slot T
sharpens (the background wins), on the objects it softens, so Eq. 7 sees the misread digits as uncertain."""

from __future__ import annotations

import numpy as np

from hgen.compiler.models.two_stage_detector import encode_targets, fit_temperature, mixture_nll
from hgen.runtime.hdnn.faster_rcnn import ANCHOR_SHAPES, BOX_FIELDS, COMPONENTS, fields

C, GRID = 10, 8


def outputs_for(targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class logits: background slots favour background by 1 (right, unsure); object slots favour one class by 5,
    the true one for half of them (sure, often wrong)."""
    width = fields(C)
    t = targets.reshape(*targets.shape[:3], len(ANCHOR_SHAPES), width)
    out = np.zeros_like(t, dtype=np.float64)
    logits = out[..., BOX_FIELDS + COMPONENTS:].reshape(*t.shape[:4], COMPONENTS, C + 1)
    one_hot = t[..., 10:10 + C + 1]
    truth = one_hot.argmax(axis=-1)
    objects = one_hot[..., -1] == 0
    wrong = (truth + rng.integers(1, C, truth.shape)) % C
    said = np.where(objects & (rng.random(truth.shape) < 0.5), wrong, truth)
    margin = np.where(objects, 5.0, 1.0)
    np.put_along_axis(logits, said[..., None, None].repeat(COMPONENTS, axis=-2), margin[..., None, None], axis=-1)
    out[..., BOX_FIELDS + COMPONENTS:] = logits.reshape(*t.shape[:4], -1)
    return out.reshape(targets.shape)


def test_temperature_is_fitted_on_objects_not_on_the_background() -> None:
    rng = np.random.default_rng(0)
    boxes = [np.array([[0.1 + 0.05 * (i % 5), 0.2, 0.45 + 0.05 * (i % 5), 0.55, i % C]]) for i in range(40)]
    targets = encode_targets(boxes, GRID, C)
    outputs = outputs_for(targets, rng)
    candidates = np.exp(np.linspace(np.log(0.25), np.log(4.0), 49))
    every_slot = candidates[int(np.argmin([mixture_nll(outputs, targets, t, objects_only=False) for t in candidates]))]
    objects = fit_temperature(outputs, targets)
    assert every_slot < 1.0 < objects  # the background would sharpen; the objects soften
    assert mixture_nll(outputs, targets, objects) < mixture_nll(outputs, targets, every_slot)


def test_a_split_without_objects_falls_back_to_every_labelled_slot() -> None:
    targets = encode_targets([np.zeros((0, 5))] * 4, GRID, C)
    outputs = outputs_for(targets, np.random.default_rng(1))  # background right by 1: T sharpens it
    assert mixture_nll(outputs, targets, 1.0) == mixture_nll(outputs, targets, 1.0, objects_only=False) > 0
    assert fit_temperature(outputs, targets) < 1.0
