"""Aggregation strategies by name (one file each): answers of m annotators -> one AggregatedLabel.

`AGGREGATORS` discovers this package on first use, so adding a strategy is adding a file with
`@AGGREGATORS.register("name")` on a class that implements `Aggregator`. A strategy's options are its `Config`
(a StrictModel in its own file), set in hub.yaml under `aggregator_options.<name>` and checked there at load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from hgen.hub.errors import UnknownAggregatorError
from hgen.protos import hub_pb2
from hgen.runtime.config import StrictModel
from hgen.runtime.hdnn import HDNNKind
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class AggregationInput:
    """What an aggregator sees for one sample.

    `history` is (sample_id, annotator_id, class_id) of past answers from the knowledge base (paused annotators'
    left out), for strategies that estimate annotator skill across tasks (dawid_skene); the others ignore it.
    `truths` are the known classes (sample_id, class_id) of the gold tasks among them.
    """

    sample_id: str
    answers: tuple[hub_pb2.Answer, ...]
    m: int
    num_classes: int
    model_probabilities: tuple[float, ...] = ()
    history: tuple[tuple[str, str, int], ...] = field(default=())
    truths: tuple[tuple[str, int], ...] = field(default=())


class NoOptions(StrictModel):
    """The `Config` of a strategy that takes no options: any key set for it in hub.yaml is refused."""


class Aggregator(Protocol):
    name: ClassVar[str]
    label: ClassVar[str]  # Answer.label field it aggregates: class_id | boxes | regions
    Config: ClassVar[type[StrictModel]]  # its options, aggregator_options.<name> in hub.yaml

    def __init__(self, config: StrictModel | None = None) -> None: ...

    @property
    def history_size(self) -> int:
        """Past answers it wants from the knowledge base (0: none)."""
        ...

    def aggregate(self, data: AggregationInput) -> hub_pb2.AggregatedLabel: ...


AGGREGATORS: Registry[type] = Registry("aggregator", UnknownAggregatorError, package=__name__)


def default_aggregator(kind: HDNNKind, configured: str) -> str:
    """The hub's configured aggregator when it aggregates what people answer for `kind` (classes: majority or
    dawid_skene), else the kind's own default (its descriptor's, e.g. box_union for H-YOLO)."""
    return configured if get_aggregator(configured).label == kind.label else kind.aggregator


def get_aggregator(name: str, config: StrictModel | None = None) -> Aggregator:
    """An instance of the strategy registered as `name` with its validated `config` (None: its defaults);
    UnknownAggregatorError lists the valid names."""
    return AGGREGATORS.get(name)(config)


def aggregator_names() -> list[str]:
    return AGGREGATORS.names()


def class_labels(answers: Sequence[hub_pb2.Answer]) -> list[tuple[str, int]]:
    """(annotator, class) of the answers that carry a class; others are ignored by class strategies."""
    return [(a.annotator_id, a.class_id) for a in answers if a.WhichOneof("label") == "class_id"]
