"""After a publish: do people agree with the deployed version's confident answers as often as with the version it
replaced?

Why: a retrain is accepted on a few hundred held-out labels, and with a noisy crowd the check can let through a
model a few points worse on the field (issue 18's mixed-crowd run: 2.6 points, passed on 190 held-out labels). The
frames it is sure of are the ones nobody corrects: the device's answer is the model's. People still see a random
share of them (the agent's audit, and the drawn share of unfamiliar frames), so per version the hub knows how often
people's label was the model's confident answer, and that figure keeps growing with every audited frame after the
publish, unlike the fixed held-out set the retrain was judged on. The operator page shows it beside the version
before, and marks the deployed one when it is lower beyond `WORSE_SE` standard errors: the rollback button is next
to it. Both versions are counted at the higher of their two taus (a re-fitted lower tau makes a version sure of
more frames, by design less precisely); even so their sure frames are not the same frames (their certainty moved),
so this is the precision of what each leaves unchecked, not one accuracy measured twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from hgen.hub.kb.models import Reply, Sample
from hgen.hub.retrain.records import RetrainStore, drawn_kinds, of_model
from hgen.protos import hub_pb2

WINDOW = 2000  # a version's latest sure labelled samples compared (recent frames are what matter)
SCAN = 50_000  # a version's latest samples looked through for them (ix_samples_bundle_version): a bounded page
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
    """The deployed version's figure and the one before's; None before any version is registered, and for models
    whose people draw (boxes, regions: no class to compare). Both are counted at the higher of the two taus, so a
    version whose re-fitted tau is lower (sure of more frames, by design less precise on them) is not compared on
    frames the other was not sure of."""
    versions = store.versions(name)
    if not versions or _drawn(store, name, versions[0].version):
        return None
    if len(versions) == 1:
        return Watch(name, checked(store, name, versions[0].version, versions[0].tau), None)
    threshold = max(versions[0].tau, versions[1].tau)
    return Watch(name, checked(store, name, versions[0].version, threshold),
                 checked(store, name, versions[1].version, threshold))


def _drawn(store: RetrainStore, name: str, version: str) -> bool:
    with store.kb.session() as s:
        kind = s.scalar(select(Sample.hdnn_kind).where(Sample.bundle_name == name, Sample.bundle_version == version)
                        .limit(1))
    return kind is not None and kind in drawn_kinds()


def checked(store: RetrainStore, name: str, version: str, threshold: float) -> Checked:
    """People's class labels of `version`'s frames it was sure of (confidence at or above `threshold`): the latest
    WINDOW of them among its latest SCAN samples."""
    latest = (select(Sample.id).where(Sample.bundle_name == name, Sample.bundle_version == version)
              .order_by(Sample.received_at.desc()).limit(SCAN).subquery())
    query = (select(Sample.model_output, Reply.class_id)
             .join(latest, latest.c.id == Sample.id).join(Reply, Reply.sample_id == Sample.id)
             .where(*of_model(name), Sample.confidence >= threshold, Reply.class_id.is_not(None))
             .order_by(Sample.received_at.desc()).limit(WINDOW))
    with store.kb.session() as s:
        rows = s.execute(query).all()
    agreed = sum(_answer(output) == label for output, label in rows)
    return Checked(version, len(rows), int(agreed))


def _answer(output: bytes) -> int | None:
    """The model's class in the device's stored output (None: no class scores)."""
    scores = hub_pb2.ModelOutput.FromString(output).class_probabilities
    return int(np.argmax(scores)) if len(scores) else None
