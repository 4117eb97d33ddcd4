"""After a publish: do people agree with the deployed version's confident answers as often as with the version it
replaced?

Why: a retrain is accepted on a few hundred held-out labels, and with a noisy crowd the check can let through a
model a few points worse on the field (issue 18's mixed-crowd run: 2.6 points, passed on 190 held-out labels). The
frames it is sure of are the ones nobody corrects: the device's answer is the model's. People still see a random
share of them (the agent's audit, and the drawn share of unfamiliar frames), so per version the hub knows how often
people's label was the model's confident answer, and that figure keeps growing with every audited frame after the
publish, unlike the fixed held-out set the retrain was judged on. The operator page shows it beside the version
before, and marks the deployed one when it is lower beyond `WORSE_SE` standard errors: the rollback button is next
to it. A version's confident frames are not the same frames as the one before's (its tau and its certainty moved),
so this is the precision of what each leaves unchecked, not one accuracy measured twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from hgen.hub.kb.models import Reply, Sample
from hgen.hub.retrain.records import RetrainStore, VersionRecord, of_model
from hgen.protos import hub_pb2

WINDOW = 2000  # a version's latest labelled samples read (bounded page; recent frames are what matter)
MIN_CHECKED = 30  # confident frames people labelled before a version's figure is compared
WORSE_SE = 2.0


@dataclass(frozen=True)
class Checked:
    """One version: its confident answers people labelled, and how many of them people agreed with."""

    version: str
    checked: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.checked if self.checked else None


@dataclass(frozen=True)
class Watch:
    """The deployed version against the one before it (None: only one version yet)."""

    name: str
    deployed: Checked
    before: Checked | None

    @property
    def worse(self) -> bool:
        """The deployed version's agreement is lower than the one before's by more than WORSE_SE standard errors
        of the difference, both with MIN_CHECKED frames."""
        if self.before is None or min(self.deployed.checked, self.before.checked) < MIN_CHECKED:
            return False
        now, then = self.deployed.rate or 0.0, self.before.rate or 0.0
        spread = math.sqrt(_variance(now, self.deployed.checked) + _variance(then, self.before.checked))
        return then - now > WORSE_SE * spread


def _variance(rate: float, n: int) -> float:
    """Of a proportion, kept off zero (a version agreeing on all of 30 frames is not certain)."""
    rate = min(max(rate, 0.5 / n), 1.0 - 0.5 / n)
    return rate * (1.0 - rate) / n


def watch(store: RetrainStore, name: str) -> Watch | None:
    """The deployed version's figure and the one before's; None before any version is registered."""
    versions = store.versions(name)
    if not versions:
        return None
    before = checked(store, name, versions[1]) if len(versions) > 1 else None
    return Watch(name, checked(store, name, versions[0]), before)


def checked(store: RetrainStore, name: str, version: VersionRecord) -> Checked:
    """People's labels of `version`'s frames it was sure of (confidence at or above its tau), its latest WINDOW
    labelled samples; a class label (detectors' drawings are not compared here)."""
    query = (select(Sample.confidence, Sample.model_output, Reply.class_id)
             .join(Reply, Reply.sample_id == Sample.id)
             .where(*of_model(name), Sample.bundle_version == version.version, Reply.class_id.is_not(None))
             .order_by(Reply.created_at.desc()).limit(WINDOW))
    with store.kb.session() as s:
        rows = s.execute(query).all()
    sure = [(output, label) for confidence, output, label in rows if confidence >= version.tau]
    agreed = sum(_answer(output) == label for output, label in sure)
    return Checked(version.version, len(sure), int(agreed))


def _answer(output: bytes) -> int | None:
    """The model's class in the device's stored output (None: no class scores)."""
    scores = hub_pb2.ModelOutput.FromString(output).class_probabilities
    return int(np.argmax(scores)) if len(scores) else None
