"""H-Faster-RCNN aggregation: a Gaussian mixture over the annotators' attention regions.

Each region is a point (centre x, centre y, width, height). Mixtures with 1..K components are fitted (K at most
the number of regions, and at most `MAX_COMPONENTS`) and the one with the lowest AIC is kept; each component
becomes one region, centred on its mean with its mean size, weighted by its mixture weight. Regions carry the
annotator's emphasis as a weight; a region of weight w counts as round(w) points (at least one).

An answer with no region is a person saying "nothing uncertain here / no object": it adds no point. When nobody
marked anything the aggregate is an empty region list (confidence 1), which the device reads as "keep your own
proposals" (`hgen.runtime.hdnn.faster_rcnn`). A region anyone marked is kept: the device's second stage scores it,
so a region nobody else saw costs a low-scored box at most, while dropping it could lose an object.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hgen.hub.aggregators import AGGREGATORS, AggregationInput, NoOptions
from hgen.hub.errors import AggregationError
from hgen.protos import hub_pb2
from hgen.runtime.config import StrictModel

MAX_COMPONENTS = 4
JITTER_SHARE = 0.1


def region_points(data: AggregationInput) -> np.ndarray:
    points = []
    for answer in data.answers:
        if answer.WhichOneof("label") != "regions":
            continue
        for r in answer.regions.regions:
            if r.x_max <= r.x_min or r.y_max <= r.y_min:
                raise AggregationError(f"sample {data.sample_id}: annotator {answer.annotator_id} marked an empty region")
            point = [(r.x_min + r.x_max) / 2, (r.y_min + r.y_max) / 2, r.x_max - r.x_min, r.y_max - r.y_min]
            points.extend([point] * max(1, int(round(r.weight or 1.0))))
    return np.asarray(points, dtype=np.float64)


def covariance_floor(points: np.ndarray) -> float:
    """Variance floor of about 10% of a region's side: annotators' jitter of a few pixels must not look like a
    separate area worth its own component, which AIC would otherwise reward with near-zero variances."""
    side = float(np.mean(points[:, 2:])) if len(points) else 1.0
    return max(1e-6, (JITTER_SHARE * side) ** 2)


def best_mixture(points: np.ndarray, seed: int = 0):  # -> sklearn GaussianMixture
    """The mixture with the lowest AIC among 1..K components (diagonal covariances with a floor)."""
    from sklearn.mixture import GaussianMixture

    fits = []
    floor = covariance_floor(points)
    for k in range(1, min(MAX_COMPONENTS, len(points)) + 1):
        model = GaussianMixture(k, covariance_type="diag", reg_covar=floor, random_state=seed).fit(points)
        fits.append((model.aic(points), k, model))
    return min(fits, key=lambda item: (item[0], item[1]))[2]


@AGGREGATORS.register("region_gmm")
class RegionGMM:
    name: ClassVar[str] = "region_gmm"
    label: ClassVar[str] = "regions"  # the Answer.label an answer must carry to be aggregated
    Config: ClassVar[type[StrictModel]] = NoOptions
    history_size = 0  # past answers it wants: none

    def __init__(self, config: StrictModel | None = None) -> None:
        self.config = config if config is not None else NoOptions()

    def aggregate(self, data: AggregationInput) -> hub_pb2.AggregatedLabel:
        points = region_points(data)
        if not any(answer.WhichOneof("label") == "regions" for answer in data.answers):
            raise AggregationError(f"sample {data.sample_id}: region_gmm needs region answers, got none")
        if len(points) == 0:  # everyone marked nothing
            return hub_pb2.AggregatedLabel(regions=hub_pb2.RegionList(), aggregator=self.name, confidence=1.0)
        if len(points) == 1:
            means, weights = points, np.ones(1)
        else:
            mixture = best_mixture(points)
            means, weights = mixture.means_, mixture.weights_
        regions = [hub_pb2.Region(x_min=cx - w / 2, y_min=cy - h / 2, x_max=cx + w / 2, y_max=cy + h / 2, weight=wt)
                   for (cx, cy, w, h), wt in zip(means, weights)]
        return hub_pb2.AggregatedLabel(regions=hub_pb2.RegionList(regions=regions), aggregator=self.name,
                                       confidence=float(weights.max()))
