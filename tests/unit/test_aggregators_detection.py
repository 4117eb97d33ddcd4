"""H-YOLO box_union and H-Faster-RCNN region_gmm aggregation."""

import pytest

from hgen.hub.aggregators import AggregationInput, aggregator_names, get_aggregator
from hgen.hub.errors import AggregationError
from hgen.protos import hub_pb2


def boxes_answer(annotator, *boxes):
    return hub_pb2.Answer(annotator_id=annotator, boxes=hub_pb2.BoxList(boxes=[
        hub_pb2.Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1, class_id=c) for x0, y0, x1, y1, c in boxes]))


def regions_answer(annotator, *regions):
    return hub_pb2.Answer(annotator_id=annotator, regions=hub_pb2.RegionList(regions=[
        hub_pb2.Region(x_min=x0, y_min=y0, x_max=x1, y_max=y1, weight=1.0) for x0, y0, x1, y1 in regions]))


def data(*answers, m=3):
    return AggregationInput("s1", tuple(answers), m, 10)


def test_detection_aggregators_are_registered():
    assert {"box_union", "region_gmm", "majority", "dawid_skene"} <= set(aggregator_names())


def test_box_union_merges_overlaps_of_a_class_and_keeps_the_rest():
    result = get_aggregator("box_union").aggregate(data(
        boxes_answer("a", (10, 10, 50, 50, 1), (100, 100, 120, 130, 2)),
        boxes_answer("b", (12, 11, 52, 49, 1)),
        boxes_answer("c", (11, 9, 49, 51, 1), (12, 12, 48, 48, 3)),  # same place, other class: kept apart
    ))
    boxes = sorted(result.boxes.boxes, key=lambda b: (b.class_id, b.x_min))
    assert [b.class_id for b in boxes] == [1, 2, 3]
    assert boxes[0].score == pytest.approx(1.0) and boxes[0].x_min == pytest.approx(11.0)
    assert boxes[1].score == pytest.approx(1 / 3) and boxes[2].score == pytest.approx(1 / 3)
    assert result.aggregator == "box_union"


def test_box_union_support_counts_the_people_who_answered():
    """A reply closed at its deadline with 1 answer of the 3 asked: its boxes had support 1/3, under the device's
    majority, so the fused answer dropped every box the one person drew."""
    alone = get_aggregator("box_union").aggregate(data(boxes_answer("a", (10, 10, 50, 50, 1), (60, 60, 90, 90, 2))))
    assert [b.score for b in alone.boxes.boxes] == [1.0, 1.0]
    declined = hub_pb2.Answer(annotator_id="b")  # no label: not counted
    two = get_aggregator("box_union").aggregate(data(boxes_answer("a", (10, 10, 50, 50, 1)), declined,
                                                     boxes_answer("c", (60, 60, 90, 90, 2))))
    assert sorted(b.score for b in two.boxes.boxes) == [0.5, 0.5]


def test_box_union_rejects_empty_boxes_and_missing_answers():
    with pytest.raises(AggregationError):
        get_aggregator("box_union").aggregate(data(boxes_answer("a", (10, 10, 10, 20, 1))))
    with pytest.raises(AggregationError):
        get_aggregator("box_union").aggregate(data(hub_pb2.Answer(annotator_id="a", class_id=3)))


def test_region_gmm_finds_two_attention_areas():
    left = [(10 + d, 10 + d, 30 + d, 30 + d) for d in (0, 1, 2, -1)]
    right = [(70 + d, 60 - d, 90 + d, 80 - d) for d in (0, 1, -2, 1)]
    answers = [regions_answer(name, l, r) for name, l, r in zip("abcd", left, right)]
    result = get_aggregator("region_gmm").aggregate(data(*answers, m=4))
    regions = sorted(result.regions.regions, key=lambda r: r.x_min)
    assert len(regions) == 2
    assert regions[0].x_min == pytest.approx(10.5, abs=1.0) and regions[1].x_min == pytest.approx(70, abs=1.5)
    assert sum(r.weight for r in regions) == pytest.approx(1.0)


def test_region_gmm_single_region_is_returned_as_is():
    result = get_aggregator("region_gmm").aggregate(data(regions_answer("a", (1, 2, 3, 4))))
    (region,) = result.regions.regions
    assert (region.x_min, region.y_min, region.x_max, region.y_max) == (1, 2, 3, 4)


def test_box_union_merges_peoples_jittered_boxes_of_a_small_object_but_not_one_persons_two_objects():
    """Three people boxing one 8-pixel object a couple of pixels apart split into minority clusters at IoU 0.5,
    and the device's majority rule dropped the object they all drew."""
    jittered = get_aggregator("box_union").aggregate(data(
        boxes_answer("a", (50, 50, 58, 58, 0)), boxes_answer("b", (52, 51, 60, 59, 0)),
        boxes_answer("c", (49, 52, 57, 60, 0))))
    assert [b.score for b in jittered.boxes.boxes] == [1.0]
    two = get_aggregator("box_union").aggregate(data(  # one person's two overlapping objects (IoU about 0.4)
        boxes_answer("a", (0, 0, 10, 10, 0), (4, 0, 14, 10, 0)), boxes_answer("b", (0, 0, 10, 10, 0), (4, 0, 14, 10, 0))))
    assert sorted((b.x_min, b.score) for b in two.boxes.boxes) == [(0.0, 1.0), (4.0, 1.0)]


def test_box_union_keeps_adjacent_objects_apart_whichever_box_comes_first():
    """Joining at IoU 0.3 in one greedy pass put B's box of the right object (a little larger than A's, so taken
    first) into A's cluster of the left one: an invented box between them with full support."""
    result = get_aggregator("box_union").aggregate(data(
        boxes_answer("A", (0, 0, 10.5, 10, 0), (5, 0, 15, 10, 0)), boxes_answer("B", (5, 0, 15.2, 10, 0)), m=2))
    found = sorted((round(b.x_min, 2), round(b.x_max, 2), b.score) for b in result.boxes.boxes)
    assert found == [(0.0, 10.5, 0.5), (5.0, 15.1, 1.0)]
