"""H-CNN majority voting: the most frequent class; ties go to the class the device model rated higher.

A tie the model does not break either (no class probabilities, or equal ones, as for every class but the model's
top guess) goes to a class drawn per sample from a hash of the sample id: breaking it by the lowest class id gave
every such tie to class 0, which is what a careless annotator who always presses the first button answers, so one
of them outvoted the honest person in every 1-1 split.

`confidence` is the winner's votes over the m people asked (or over those who answered, if more did): one answer
of three, closed at the deadline, is not the agreement of the crowd, and reported 1.0 (as sure as three agreeing).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import ClassVar

from hgen.hub.aggregators import AGGREGATORS, AggregationInput, NoOptions, class_labels
from hgen.hub.errors import AggregationError
from hgen.protos import hub_pb2
from hgen.runtime.config import StrictModel


def tie_draw(sample_id: str, label: int) -> int:
    """A stable pseudo-random rank of `label` for one sample: the same sample always closes the same way, and no
    class is favoured across samples."""
    return int.from_bytes(hashlib.blake2b(f"{sample_id}\x00{label}".encode(), digest_size=8).digest(), "big")


def agreement(votes: int, answered: int, m: int) -> float:
    """Share of the people asked (m, or those who answered if more did) who gave the winning class."""
    return votes / max(answered, m, 1)


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
            return counts[label], prior, tie_draw(data.sample_id, label)

        winner = max(counts, key=rank)
        return hub_pb2.AggregatedLabel(class_id=winner, aggregator=self.name,
                                       confidence=agreement(counts[winner], len(labels), data.m))
