"""H-Faster-RCNN test helpers: a SIMULATED crowd that marks attention regions.

The simulated annotators do not look at images: they know the true boxes (an oracle) and mark a noisy copy of each
as a region (no class: regions say where, the device's second stage says what), seeded: each corner moves by
Gaussian pixel noise, a box is missed with a small probability. Every answer is marked `simulated`. They answer
through the annotator API (next_task / submit_answer), as the web UI's regions view does, so aggregation
(`region_gmm`), replies and the retrain trigger are the hub's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.hub.testing.detection import DrawingCrowd
from hgen.protos import hub_pb2


@dataclass(frozen=True)
class RegionAnnotator:
    """One simulated person: corner noise (pixels) and the probability of missing an object (a person who misses
    every object of a canvas answers "nothing here": an empty region list)."""

    name: str
    corner_noise_px: float = 1.0
    miss: float = 0.0


class RegionCrowd(DrawingCrowd):
    """Simulated annotators answering region tasks from an oracle (sample id -> true pixel boxes [k, 5+])."""

    latency_s = 5.0

    def answer_fields(self, person: RegionAnnotator, truth: np.ndarray) -> dict[str, Any]:
        regions = self.answer(person, truth)
        return {"regions": regions, "operations": max(1, len(regions.regions))}  # "nothing here" is one click

    def answer(self, person: RegionAnnotator, truth: np.ndarray) -> hub_pb2.RegionList:
        regions = []
        for x0, y0, x1, y1 in np.asarray(truth, np.float64).reshape(len(truth), -1)[:, :4]:
            if self.rng.random() < person.miss:
                continue
            a, b, c, d = np.array([x0, y0, x1, y1]) + self.rng.normal(0.0, person.corner_noise_px, 4)
            regions.append(hub_pb2.Region(x_min=a, y_min=b, x_max=max(c, a + 1), y_max=max(d, b + 1), weight=1.0))
        return hub_pb2.RegionList(regions=regions)
