"""The agent's runtime class prior (SMART): learns the class mix from labels it trusts and re-weights each frame's
class probabilities by it before the gate and the fusion.

Trusted labels are the model's confident answers (decision `confident`) and the fused answers of people; samples
under tau whose answer stands only because of a budget are not trusted. The re-weighting shifts the logits
(z + T log q), so confidence, difficulty, the probabilities people see and the fusion all use p_i q_i / sum p_j q_j
without any of them knowing about the prior. Classification bundles only: for other kinds the prior stays off and
says why on status. Thread-safe: the pipeline adjusts and trusts, the reply thread trusts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from hgen.edge_agent.config import PriorConfig
from hgen.runtime.prior import MixChange, PriorEstimator, PriorSettings, shift_logits

if TYPE_CHECKING:
    from hgen.edge_agent.model import Model
    from hgen.edge_agent.telemetry import Telemetry

log = logging.getLogger(__name__)


def settings_of(config: PriorConfig) -> PriorSettings:
    return PriorSettings(window=config.window, threshold=config.threshold, smoothing=config.smoothing)


def class_count(model: Model) -> int | None:
    """Classes whose probabilities the model outputs, or None when its kind has no class probabilities."""
    shape = tuple(model.manifest.output_shape or ())
    labels = len(model.manifest.labels)
    has_probs = getattr(model.kind, "probabilities", None) is not None
    return labels if has_probs and len(shape) == 2 and shape[-1] == labels and labels >= 2 else None


class ClassPrior:
    """One per agent; `adjust` each frame's outputs, `trust` each confident or fused label."""

    def __init__(self, config: PriorConfig, telemetry: Telemetry, model: Model) -> None:
        self.config = config
        self.telemetry = telemetry
        self._lock = threading.Lock()
        self._estimator: PriorEstimator | None = None
        self._labels: tuple[str, ...] = ()
        self.last_change: MixChange | None = None
        telemetry.gauge("prior_changes", lambda: len(self._estimator.changes) if self._estimator else 0)
        telemetry.gauge("prior_observed", lambda: self._estimator.observed if self._estimator else 0)
        telemetry.gauge("prior_last_change_l1", lambda: self.last_change.distance if self.last_change else 0.0)
        self.bind(model)

    def bind(self, model: Model) -> None:
        """Start (or keep) an estimate for `model`'s classes; a swap to other labels starts over."""
        labels = tuple(model.manifest.labels)
        with self._lock:
            if labels == self._labels and self._estimator is not None:
                return
            classes = class_count(model)
            self._labels = labels
            self._estimator = None if classes is None else PriorEstimator(classes, settings_of(self.config))
        if classes is None:
            self.telemetry.problem("prior", f"class prior off: kind {model.manifest.kind} has no class probabilities")
            return
        self.telemetry.problem("prior", "")
        for i, name in enumerate(labels):
            self.telemetry.gauge(f"prior.{name}", self._share(i))

    def _share(self, index: int) -> Callable[[], float]:
        def read() -> float:
            with self._lock:
                estimator = self._estimator
                return float(estimator.prior()[index]) if estimator and index < estimator.classes else 0.0
        return read

    def adjust(self, model: Model, logits: np.ndarray) -> np.ndarray:
        """The model's outputs with the prior applied (unchanged until a full window shows a skewed mix)."""
        self.bind(model)
        with self._lock:
            estimator = self._estimator
            if estimator is None or not estimator.skewed():
                return logits  # cold, or a mix close to the training mix: the model's own probabilities
            prior = estimator.prior()
        return shift_logits(logits, prior, model.params.temperature)

    def trust(self, label: int | None) -> None:
        """Count a label the device trusts; a detected change of mix is logged and reported on status."""
        if label is None:
            return
        with self._lock:
            estimator = self._estimator
            if estimator is None or not 0 <= int(label) < estimator.classes:
                return
            change = estimator.observe(int(label))
            if change is not None:
                self.last_change = change
        if change is not None:
            log.info("class mix changed after %d trusted labels: L1 %.3f", change.observed, change.distance)

    def prior(self) -> np.ndarray | None:
        with self._lock:
            return None if self._estimator is None else self._estimator.prior()

    def changes(self) -> list[MixChange]:
        with self._lock:
            return [] if self._estimator is None else list(self._estimator.changes)
