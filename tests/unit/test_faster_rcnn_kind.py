"""Issue 21: H-Faster-RCNN's runtime math: Eq. 7 confidence from the mixture density head (and its temperature), the
people's prior anchors (the region, 1:3 and 3:1 at three sizes, centred where people pointed), which slot of the
second stage scores each, and fusion (one detection per people's region, classed by the second stage)."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.runtime.errors import InvalidInputError
from hgen.runtime.hdnn import FusionParams, get_kind, needs_human
from hgen.runtime.hdnn.faster_rcnn import (ANCHOR_SHAPES, BOX_FIELDS, COMPONENTS, anchor_boxes, fields,
                                           fuse_image, mdn_confidence, prior_anchors, slot_of, split)

C, GRID = 4, 8
A, F = len(ANCHOR_SHAPES), fields(C)
KIND = get_kind("faster_rcnn")


def blank() -> np.ndarray:
    """One image whose RPN sees nothing and whose head says 'background' (index C) surely in every slot."""
    out = np.zeros((1, GRID, GRID, A, F))
    out[..., 0] = -8.0
    out[..., BOX_FIELDS + COMPONENTS + np.arange(COMPONENTS) * (C + 1) + C] = 10.0
    return out


def set_head(out: np.ndarray, row: int, col: int, slot: int, class_logits: np.ndarray, mixing: np.ndarray) -> None:
    out[0, row, col, slot, BOX_FIELDS:BOX_FIELDS + COMPONENTS] = mixing
    out[0, row, col, slot, BOX_FIELDS + COMPONENTS:] = np.asarray(class_logits, np.float64).reshape(-1)


def flat(out: np.ndarray) -> np.ndarray:
    return out.reshape(out.shape[0], GRID, GRID, A * F)


def test_eq7_is_the_mixture_weighted_top_class_probability() -> None:
    pi = np.array([0.5, 0.3, 0.2])
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    assert mdn_confidence(pi, probs) == pytest.approx(0.5 * 0.9 + 0.3 * 0.6 + 0.2 * 0.6)


def test_image_confidence_is_its_least_certain_proposal_and_the_temperature_softens_it() -> None:
    out = blank()
    out[0, 3, 4, 4, 0] = 6.0  # the RPN's top proposal, in slot 4 of cell (3, 4)
    logits = np.zeros((COMPONENTS, C + 1))
    logits[0, 2], logits[1, 2], logits[2, 1] = 3.0, 1.0, 2.0
    mixing = np.log([0.6, 0.3, 0.1])
    set_head(out, 3, 4, 4, logits, mixing)
    e = np.exp(logits)
    expected = float(np.sum([0.6, 0.3, 0.1] * (e / e.sum(axis=1, keepdims=True)).max(axis=1)))
    c = KIND.confidence(flat(out), FusionParams(temperature=1.0))
    assert c.shape == (1,) and c[0] == pytest.approx(expected)  # the other proposals are sure background
    assert KIND.confidence(flat(out), FusionParams(temperature=2.0))[0] < c[0]
    assert needs_human(c, 0.9)[0] and not needs_human(c, expected - 1e-6)[0]
    assert KIND.confidence(flat(blank()), FusionParams())[0] == pytest.approx(1.0, abs=1e-3)


def test_prior_anchors_are_the_region_then_1_3_and_3_1_at_three_sizes_centred_on_it() -> None:
    priors = prior_anchors(np.array([0.2, 0.3, 0.4, 0.7]))  # w 0.2, h 0.4
    assert priors.shape == (7, 4)
    assert np.allclose(priors[:, :2], [0.3, 0.5])  # all centred where people pointed
    assert np.allclose(priors[0, 2:], [0.2, 0.4])  # the region itself
    side = np.sqrt(0.2 * 0.4)
    aspects = priors[1:, 2] / priors[1:, 3]
    areas = priors[1:, 2] * priors[1:, 3]
    assert np.allclose(sorted(aspects), [1 / 3] * 3 + [3.0] * 3)
    assert np.allclose(sorted(np.sqrt(areas)), sorted([side * s for s in (0.5, 1.0, 2.0) for _ in range(2)]))


def test_each_prior_is_scored_in_the_cell_holding_its_centre_by_the_slot_shape_overlapping_it_most() -> None:
    w, h = ANCHOR_SHAPES[5]
    index = slot_of(np.array([[0.55, 0.30, w, h], [0.99, 0.01, 0.05, 0.05]]), GRID)
    anchors = anchor_boxes(GRID).reshape(-1, 4)
    assert np.allclose(anchors[index[0]], [4.5 / GRID, 2.5 / GRID, w, h])  # cell (row 2, col 4), the same shape
    assert anchors[index[1]][0] == pytest.approx(7.5 / GRID) and anchors[index[1]][1] == pytest.approx(0.5 / GRID)
    assert np.argmin(anchors[:A, 2] * anchors[:A, 3]) == index[1] % A  # a tiny prior: the smallest slot


def test_fusion_gives_one_box_per_region_classed_by_the_second_stage_where_people_pointed() -> None:
    out = blank()
    region = np.array([0.30, 0.30, 0.50, 0.50, 1.0])  # centre (0.4, 0.4): cell row 3, col 3
    index = slot_of(prior_anchors(region), GRID)
    assert set(index // A) == {3 * GRID + 3}  # every prior is scored in the cell holding the region's centre
    logits = np.full((COMPONENTS, C + 1), -5.0)
    logits[:, 3] = 5.0
    for slot in range(A):
        set_head(out, 3, 3, slot, logits, np.zeros(COMPONENTS))
    out[0, 3, 3, index[0] % A, 5:9] = [0.1, 0.0, 0.0, 0.0]  # the region's own slot moves its box right
    own = KIND.predict(flat(out), FusionParams())[0]
    assert len(own) == 0  # the RPN proposed nothing there: the model alone misses it
    fused = KIND.fuse(flat(out), [region[None]], FusionParams())[0]
    assert len(fused) == 1 and fused.classes[0] == 3 and fused.scores[0] > 0.99
    cx, cy = (fused.boxes[0, :2] + fused.boxes[0, 2:]) / 2
    w = ANCHOR_SHAPES[index[0] % A][0]
    assert (cx, cy) == pytest.approx((3.5 / GRID + 0.1 * w, 3.5 / GRID))  # the head's box of the region's own slot
    ranked = fuse_image(split(flat(out)), 0, region[None], 1.0, score_threshold=1e-6)
    assert list(ranked.classes[:1]) == [3] and len(ranked) == C and np.all(np.diff(ranked.scores) <= 0)
    assert len(KIND.fuse(flat(out), [np.zeros((0, 5))], FusionParams())[0]) == len(own)  # empty: the model's stands
    assert len(KIND.fuse(flat(out), [None], FusionParams())[0]) == len(own)  # no answer: the model's stands


def test_output_width_and_bad_outputs_are_typed_errors() -> None:
    assert KIND.output_channels(C) == A * F == split(flat(blank())).objectness.shape[-1] * F
    with pytest.raises(InvalidInputError):
        split(np.zeros((1, GRID, GRID, A * F + 1)))
    with pytest.raises(InvalidInputError):
        KIND.fuse(flat(blank()), [None, None], FusionParams())
    with pytest.raises(InvalidInputError, match="x_max"):
        KIND.fuse(flat(blank()), [np.array([[0.5, 0.5, 0.4, 0.6, 1.0]])], FusionParams())


def test_a_region_over_the_models_own_proposal_keeps_its_box_and_class() -> None:
    """The second stage runs on the RPN's proposals too: where people point at what the model found, the answer is
    the model's refined box and class there (not the prior anchors' mean), one per region."""
    out = blank()
    slot = int(np.argmin(np.abs(np.asarray(ANCHOR_SHAPES)[:, 0] - 0.3) + np.abs(np.asarray(ANCHOR_SHAPES)[:, 1] - 0.3)))
    out[0, 3, 3, slot, 0] = 6.0  # the RPN proposes cell (3, 3)
    out[0, 3, 3, slot, 5:9] = [0.05, 0.0, 0.1, 0.0]  # the head refines it
    logits = np.full((COMPONENTS, C + 1), -5.0)
    logits[:, 1] = 5.0
    set_head(out, 3, 3, slot, logits, np.zeros(COMPONENTS))
    own = KIND.predict(flat(out), FusionParams())[0]
    assert len(own) == 1 and own.classes[0] == 1
    w, h = ANCHOR_SHAPES[slot]
    cx = 4.1 / GRID  # people's region centred in the next cell, still overlapping the model's box (IoU > 0.5)
    region = np.array([cx - w / 2, 3.5 / GRID - h / 2, cx + w / 2, 3.5 / GRID + h / 2, 1.0])
    assert set(slot_of(prior_anchors(region), GRID) // A) == {3 * GRID + 4}  # its prior anchors: a blank cell
    fused = KIND.fuse(flat(out), [region[None]], FusionParams())[0]
    assert len(fused) == 1 and fused.classes[0] == 1 and fused.scores[0] > 0.99
    np.testing.assert_allclose(fused.boxes[0], own.boxes[0])  # the model's refined box, not the region's anchor
