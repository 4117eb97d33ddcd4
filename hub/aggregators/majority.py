"""H-CNN majority voting: the most frequent class; ties go to the class the device model rated higher."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from hgen.hub.aggregators import AGGREGATORS, AggregationInput, NoOptions, class_labels
from hgen.hub.errors import AggregationError
from hgen.protos import hub_pb2
from hgen.runtime.config import StrictModel


@AGGREGATORS.register("majority")
class Majority:
    name: ClassVar[str] = "majority"
    label: ClassVar[str] = "class_id"  # the Answer.label an answer must carry to be aggregated
    Config: ClassVar[type[StrictModel]] = NoOptions
    history_size = 0  # past answers it wants: none

    def __init__(self, config: StrictModel | None = None) -> None:
        self.config = config if config is not None else NoOptions()

    def aggregate(self, data: AggregationInput) -> hub_pb2.AggregatedLabel:
        labels = [label for _, label in class_labels(data.answers)]
        if not labels:
            raise AggregationError(f"sample {data.sample_id}: majority needs class answers, got none")
        counts = Counter(labels)
        probs = data.model_probabilities

        def rank(label: int) -> tuple[int, float, int]:
            prior = probs[label] if label < len(probs) else 0.0
            return counts[label], prior, -label

        winner = max(counts, key=rank)
        return hub_pb2.AggregatedLabel(class_id=winner, aggregator=self.name,
                                       confidence=counts[winner] / len(labels))
