"""Dawid-Skene (crowd-kit): EM over annotator confusion matrices, for annotators of unequal skill.

One sample's three answers say nothing about who is reliable, so the model is fitted on the knowledge base's
recent answers (`history`) plus this sample's, then read out for this sample. How many recent answers is its option
`history` (hub.yaml `aggregator_options.dawid_skene.history`): the knowledge base fetches that many.

Gold tasks among those answers (`truths`) have their known class pinned in EM, so annotators' skill is anchored to
the truth: without it, two people copying one another's wrong answers outvoted an honest one in EM as they do in a
vote. Paused annotators' past answers are left out of the history (the knowledge base does so).

The label is the most probable class among those somebody answered for this sample: when EM finds every answer
uninformative (one careless person who always presses the first button answered alone before the deadline), the
posterior is the class prior, and its top class, one nobody gave, was stored as the people's label and retrained on.
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd
from crowdkit.aggregation import DawidSkene as _CrowdKitDawidSkene
from pydantic import Field

from hgen.hub.aggregators import AGGREGATORS, AggregationInput, class_labels
from hgen.hub.aggregators.majority import Majority, tie_draw
from hgen.hub.errors import AggregationError
from hgen.protos import hub_pb2
from hgen.runtime.config import StrictModel

EM_ITERATIONS = 20
EM_TOLERANCE = 1e-4


class DawidSkeneConfig(StrictModel):
    history: int = Field(600, ge=0, title="Past answers dawid_skene uses to estimate annotator skill")


def _gold(data: AggregationInput, frame: pd.DataFrame) -> pd.Series | None:
    """The gold tasks' known classes, pinned in EM (crowd-kit's `true_labels`): those among the answered classes
    only (a class nobody answered is no column of EM's posterior). None when there are none."""
    answered = set(frame["label"])
    known = {task: c for task, c in data.truths if task != data.sample_id and c in answered}
    return pd.Series(known) if known else None


@AGGREGATORS.register("dawid_skene")
class DawidSkene:
    name: ClassVar[str] = "dawid_skene"
    label: ClassVar[str] = "class_id"  # the Answer.label an answer must carry to be aggregated
    Config: ClassVar[type[StrictModel]] = DawidSkeneConfig

    def __init__(self, config: DawidSkeneConfig | None = None) -> None:
        self.config = config if config is not None else DawidSkeneConfig()

    @property
    def history_size(self) -> int:
        return self.config.history

    def aggregate(self, data: AggregationInput) -> hub_pb2.AggregatedLabel:
        current = class_labels(data.answers)
        if not current:
            raise AggregationError(f"sample {data.sample_id}: dawid_skene needs class answers, got none")
        rows = [(t, w, c) for t, w, c in data.history if t != data.sample_id]
        rows += [(data.sample_id, w, c) for w, c in current]
        if len({w for _, w, _ in rows}) < 2:  # EM is undefined with one annotator: fall back, same result
            result = Majority().aggregate(data)
            return hub_pb2.AggregatedLabel(class_id=result.class_id, aggregator=self.name,
                                           confidence=result.confidence)
        frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
        model = _CrowdKitDawidSkene(n_iter=EM_ITERATIONS, tol=EM_TOLERANCE).fit(frame, _gold(data, frame))
        posterior = model.probas_.loc[data.sample_id]
        label = max({c for _, c in current}, key=lambda c: (float(posterior.get(c, 0.0)), tie_draw(data.sample_id, c)))
        return hub_pb2.AggregatedLabel(class_id=label, aggregator=self.name,
                                       confidence=float(posterior.get(label, 0.0)))
