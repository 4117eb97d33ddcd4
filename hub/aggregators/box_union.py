"""H-YOLO aggregation: the union of the m annotators' boxes, overlapping boxes of the same class merged.

Fuzzy merge, in two passes. First, boxes are taken largest first; a box joins the cluster of its class, among
those its annotator has no box in yet (one person draws one object once), whose running mean box it overlaps most,
if by IoU >= `IOU_THRESHOLD` (0.5), else it starts a new cluster. Then clusters of one class drawn by different
people are merged, the most overlapping pair first, while their mean boxes overlap by IoU >= `JOIN_IOU` (0.3):
three people boxing one 8-pixel object with 2 pixels of hand jitter split into minority clusters at 0.5, and the
object was dropped in 60 % of frames. Joining at 0.3 in the first pass already merged two adjacent objects when
another person's box of the right one came first; after the first pass each of them holds both people's boxes, so
the second pass leaves them apart. Each cluster becomes one box, the median of each coordinate (the mean let one
person's oversized box that still overlapped by 0.5 pull the answer about 3 pixels off a 20-pixel object; with
three boxes the median follows the two that agree, with two it is their mean), whose score is its support: the
share of the annotators who answered with boxes that drew it. It is a union, so a box drawn by one person survives
(with support 1/answers); the device's fusion decides how much to trust it.
Support counts those who answered, not the m asked: a reply closed at its deadline with one answer of three gave
that person's boxes 1/3, below the device's majority, and the fused answer lost every box they drew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from hgen.hub.aggregators import AGGREGATORS, AggregationInput, NoOptions
from hgen.hub.errors import AggregationError
from hgen.protos import hub_pb2
from hgen.runtime.config import StrictModel

IOU_THRESHOLD = 0.5
JOIN_IOU = 0.3  # clusters of different people's boxes merge from this overlap on (see the module docstring)
MAX_MERGED = 400  # clusters the second pass compares pairwise (more: the first pass's clusters stand)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x_min, y_min, x_max, y_max) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Cluster:
    class_id: int
    boxes: list[np.ndarray] = field(default_factory=list)
    annotators: set[str] = field(default_factory=set)

    @property
    def mean(self) -> np.ndarray:
        return np.mean(self.boxes, axis=0)

    @property
    def median(self) -> np.ndarray:
        """The box the cluster answers with: robust to one person's outlier (see the module docstring)."""
        return np.median(self.boxes, axis=0)


def _boxes(data: AggregationInput) -> list[tuple[str, int, np.ndarray]]:
    found = []
    for answer in data.answers:
        if answer.WhichOneof("label") != "boxes":
            continue
        for box in answer.boxes.boxes:
            coords = np.array([box.x_min, box.y_min, box.x_max, box.y_max], dtype=np.float64)
            if coords[2] <= coords[0] or coords[3] <= coords[1]:
                raise AggregationError(f"sample {data.sample_id}: annotator {answer.annotator_id} drew an empty box")
            found.append((answer.annotator_id, int(box.class_id), coords))
    return found


def cluster_boxes(boxes: list[tuple[str, int, np.ndarray]], threshold: float = IOU_THRESHOLD) -> list[_Cluster]:
    """Both passes (see the module docstring)."""
    clusters = _first_pass(boxes, threshold)
    return _merge_disjoint(clusters) if len(clusters) <= MAX_MERGED else clusters


def _first_pass(boxes: list[tuple[str, int, np.ndarray]], threshold: float) -> list[_Cluster]:
    clusters: list[_Cluster] = []
    area = lambda c: (c[2] - c[0]) * (c[3] - c[1])  # noqa: E731
    for annotator, class_id, coords in sorted(boxes, key=lambda item: -area(item[2])):
        open_to = [(iou(c.mean, coords), i) for i, c in enumerate(clusters)
                   if c.class_id == class_id and annotator not in c.annotators]
        best = max(open_to, default=(0.0, -1))
        home = clusters[best[1]] if best[0] >= threshold else None
        if home is None:
            home = _Cluster(class_id)
            clusters.append(home)
        home.boxes.append(coords)
        home.annotators.add(annotator)
    return clusters


def _merge_disjoint(clusters: list[_Cluster]) -> list[_Cluster]:
    """Merge the most overlapping pair of one class with no annotator in common while it overlaps by JOIN_IOU.
    The pairs' overlaps are computed once (upper triangle, -1 where they may not merge); a merge recomputes only
    the merged cluster's pairs."""
    k = len(clusters)
    alive = [True] * k
    overlap = np.full((k, k), -1.0)
    for i in range(k):
        overlap[i, i + 1:] = [_mergeable(clusters[i], other) for other in clusters[i + 1:]]
    while k > 1:
        i, j = (int(n) for n in np.unravel_index(int(np.argmax(overlap)), overlap.shape))
        if overlap[i, j] < JOIN_IOU:
            break
        clusters[i].boxes.extend(clusters[j].boxes)
        clusters[i].annotators |= clusters[j].annotators
        alive[j] = False
        overlap[j, :] = overlap[:, j] = -1.0
        for other in (n for n in range(k) if alive[n] and n != i):
            overlap[min(i, other), max(i, other)] = _mergeable(clusters[i], clusters[other])
    return [c for c, kept in zip(clusters, alive) if kept]


def _mergeable(a: _Cluster, b: _Cluster) -> float:
    """IoU of the two clusters' mean boxes if they may merge (one class, no annotator in both), else -1."""
    return iou(a.mean, b.mean) if a.class_id == b.class_id and not a.annotators & b.annotators else -1.0


@AGGREGATORS.register("box_union")
class BoxUnion:
    name: ClassVar[str] = "box_union"
    label: ClassVar[str] = "boxes"  # the Answer.label an answer must carry to be aggregated
    Config: ClassVar[type[StrictModel]] = NoOptions
    history_size = 0  # past answers it wants: none

    def __init__(self, config: StrictModel | None = None) -> None:
        self.config = config if config is not None else NoOptions()

    def aggregate(self, data: AggregationInput) -> hub_pb2.AggregatedLabel:
        answered = [a for a in data.answers if a.WhichOneof("label") == "boxes"]
        if not answered:
            raise AggregationError(f"sample {data.sample_id}: box_union needs box answers, got none")
        clusters = cluster_boxes(_boxes(data))
        people = len({a.annotator_id for a in answered})
        merged = [hub_pb2.Box(x_min=b[0], y_min=b[1], x_max=b[2], y_max=b[3], class_id=c.class_id,
                              score=len(c.annotators) / people) for c in clusters for b in [c.median]]
        support = float(np.mean([box.score for box in merged])) if merged else 1.0  # all agreed: nothing there
        return hub_pb2.AggregatedLabel(boxes=hub_pb2.BoxList(boxes=merged), aggregator=self.name, confidence=support)
