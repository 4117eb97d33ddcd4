"""Judging one retrain: the held-out field set, the gate re-fitted on it, and the acceptance check that decides
whether the new model replaces the deployed one (`hgen.hub.retrain.accept` holds the checks themselves).

Kept apart from `pipeline.py`, which runs the steps in order: what a retrain is judged on (which labels, at which
labour, against which demand) is the part that changes when the field teaches us something, and it reads the
demands from the model's settings or its compile config once per question."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hgen.hub.config import FieldConfig, ModelConfig, RetrainConfig
from hgen.hub.retrain.accept import (Acceptance, Gate, check, check_drift, check_fused, check_labour, compare_labour,
                                     expected_labour, paired_margin)
from hgen.hub.retrain.data import without_seen
from hgen.hub.retrain.field import FieldSet, at_equal_labour, field_metrics, field_set, refit, refitted_tau, tau_after
from hgen.hub.retrain.kinds import HumanLabels, OriginalData, RetrainKind, fused_scorer, sample_scorer
from hgen.hub.retrain.records import RetrainStore, VersionRecord
from hgen.hub.retrain.research import Searched, load_compile_config
from hgen.runtime.bundle.manifest import Manifest
from hgen.runtime.errors import HGenError
from hgen.runtime.familiarity import Familiarity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What a retrain starts from: the deployed version and manifest, the original data, all human labels."""

    current: VersionRecord
    manifest: Manifest
    data: OriginalData
    human: HumanLabels
    kind: RetrainKind


class Judge:
    """The field set, the re-fit and the acceptance check of a retrain, for the models `config` names.

    `verified(bundle_dir)` reads a bundle's manifest checking its signature; `store_dir()` is `retrain.store_dir`
    (RetrainError when unset), where a compile config's settings are read into."""

    def __init__(self, config: RetrainConfig, store: RetrainStore, verified: Callable[[Path], Manifest],
                 store_dir: Callable[[], Path]) -> None:
        self.config = config
        self.store = store
        self._verified = verified
        self._store_dir = store_dir
        self._familiarity: dict[str, Familiarity | None] = {}  # bundle dir -> its verified manifest's ranges

    # --- the field ------------------------------------------------------------------------------------------

    def field(self, model_config: ModelConfig, prepared: Prepared, holdout: HumanLabels) -> FieldSet | None:
        """The held-out human labels weighted as the field (`field.py`), for kinds with a fused score; None when
        too few to re-fit or judge on."""
        if fused_scorer(prepared.kind) is None or len(holdout) < self.config.field.min_samples:
            return None
        versions = self.store.versions(model_config.name)
        taus = {v.version: v.tau for v in versions}
        familiarity = {v.version: self.familiarity_of(v.bundle_dir) for v in versions}
        return field_set(self.store.kb, holdout, taus, self.config.field.audit_share, familiarity,
                         self.config.field.unfamiliar_share)

    def familiarity_of(self, bundle_dir: str) -> Familiarity | None:
        """A version's familiarity ranges, from its bundle verified once (versions are never rewritten). An old
        version's folder deleted to free the disk failed every later retrain; its frames are weighted as if it
        had no ranges (as versions compiled before them), and the log says so."""
        if bundle_dir not in self._familiarity:
            try:
                self._familiarity[bundle_dir] = self._verified(Path(bundle_dir)).familiarity
            except (OSError, HGenError) as exc:
                log.warning("the bundle %s cannot be read (%s): its held-out frames are weighted without its "
                            "familiarity ranges", bundle_dir, exc)
                self._familiarity[bundle_dir] = None
        return self._familiarity[bundle_dir]

    def refit(self, model_config: ModelConfig, prepared: Prepared, enhanced: Any, field: FieldSet) -> Any:
        """Temperature and tau re-chosen on the field; with `field.keep_fused`, tau also keeps what the deployed
        model is expected to reach with people there (or the accuracy demand, if lower)."""
        from hgen.compiler.models import load_model_file

        floor = 0.0
        if self.config.field.keep_fused:
            floor = fused_scorer(prepared.kind)(load_model_file(prepared.current.keras_path),  # type: ignore[misc]
                                                prepared.current.temperature, prepared.manifest.tau, field,
                                                self.config.human_accuracy)
            demand = self.accuracy_demand(model_config, enhanced)
            floor = floor if demand is None else min(floor, demand)
        demand = self.labour_demand(model_config)
        return refit(enhanced, field, self._field_rules(demand),
                     labour_demand=self._labour_kept(demand, prepared, field), accuracy_floor=floor,
                     human_accuracy=self.config.human_accuracy)

    def _field_rules(self, demand: float | None) -> FieldConfig:
        """`retrain.field`; for a kept labour (no demand) without its margin and upper bound: those keep a demand
        agreed in advance from being overshot, and applied to the deployed version's own labour they chose a tau
        asking about 14 % less each retrain, whose fused accuracy fell (0.920 -> 0.881) with no one noticing."""
        if demand is not None:
            return self.config.field
        return self.config.field.model_copy(update={"labour_margin": 1.0, "labour_confidence": 0.0})

    def _labour_kept(self, demand: float | None, prepared: Prepared, field: FieldSet | None) -> float | None:
        """The labour demand tau is re-chosen and judged at: the model's, else the deployed version's expected labour
        on the field's held-out labels (people are asked no more than they were; re-fitting the temperature alone
        under the deployed tau raised the share asked, 59 % -> 77 % on a noisy field), else None (no field set)."""
        if demand is not None or field is None or fused_scorer(prepared.kind) is None:
            return demand
        from hgen.compiler.models import load_model_file

        deployed = Gate(load_model_file(prepared.current.keras_path), prepared.current.temperature,
                        prepared.manifest.tau)
        return expected_labour(prepared.kind.name, deployed, field)

    # --- the demands ----------------------------------------------------------------------------------------

    def labour_demand(self, model_config: ModelConfig) -> float | None:
        """The labour demand (Eq. 13's L): the configured one, or the compile's, or None."""
        if model_config.labour_demand is not None or model_config.compile_config is None:
            return model_config.labour_demand
        return float(self._compile_demands(model_config).labour)

    def accuracy_demand(self, model_config: ModelConfig, enhanced: Any) -> float | None:
        """What the H-DNN must keep with people: the re-search's demand, the configured one, or the compile's."""
        if isinstance(enhanced, Searched):
            return enhanced.accuracy_demand
        if model_config.accuracy_demand is not None or model_config.compile_config is None:
            return model_config.accuracy_demand
        return float(self._compile_demands(model_config).accuracy)

    def _compile_demands(self, model_config: ModelConfig) -> Any:
        out = self._store_dir() / model_config.name / "research-check"
        return load_compile_config(model_config.compile_config, model_config.name, out).demands

    # --- the acceptance check -------------------------------------------------------------------------------

    def accept(self, model_config: ModelConfig, prepared: Prepared, enhanced: Any, holdout: HumanLabels,
               field: FieldSet | None = None) -> Acceptance:
        """The kind's metric on held-out human labels and the test split (minus images people labelled), then,
        for kinds that have it, the expected accuracy with people at the tau the new model will run with: on the
        field's held-out labels when there are enough (`field.py`), else on the test split; at the labour demand
        (without one, the deployed version's labour on the field), or, with no tau re-chosen within it, only for a
        new version that asks people no more than the demand, or without one than the deployed one
        (`check_labour`)."""
        from hgen.compiler.models import load_model_file

        current_model = load_model_file(prepared.current.keras_path)
        test = without_seen(prepared.data.test, prepared.human.x)
        verdict = check(current_model, enhanced.model, holdout, test,
                        tolerance=self.config.tolerance, min_holdout=self.config.min_holdout,
                        score=prepared.kind.score, metric=prepared.kind.metric, trade=self.config.field.trade,
                        holdout_margin=self._holdout_margin(prepared, current_model, enhanced.model, holdout))
        first = self.store.versions(model_config.name)[-1]
        if first.version != prepared.current.version:
            verdict = check_drift(verdict, prepared.kind.score(load_model_file(first.keras_path), test),
                                  tolerance=self.config.tolerance + self.config.field.trade,
                                  first_version=first.version)
        if fused_scorer(prepared.kind) is None:
            return verdict
        return self._accept_fused(model_config, prepared, enhanced, verdict, current_model, test, field)

    def _accept_fused(self, model_config: ModelConfig, prepared: Prepared, enhanced: Any, verdict: Acceptance,
                      current_model: Any, test: Any, field: FieldSet | None) -> Acceptance:
        """The H-DNN part of `accept`: expected accuracy with people, at equal labour where tau was re-chosen."""
        fused = fused_scorer(prepared.kind)
        assert fused is not None
        new_tau = enhanced.tau if isinstance(enhanced, Searched) else tau_after(enhanced, prepared.manifest.tau)
        people = self.config.human_accuracy
        judged, where = (test, "the original test split") if field is None else (field,
                                                                                 "held-out field labels")
        current = fused(current_model, prepared.current.temperature, prepared.manifest.tau, judged, people)
        new = fused(enhanced.model, enhanced.temperature, new_tau, judged, people)
        demand = self.labour_demand(model_config)  # reads the compile config: once
        labour = self._labour_kept(demand, prepared, field)
        if refitted_tau(enhanced) is None and not isinstance(enhanced, Searched):
            # no tau re-chosen for the labour (a re-search chose its own within the demand): people may be asked
            # no more than the demand, or without one than by the deployed version
            verdict = check_labour(verdict, compare_labour(
                prepared.kind.name, Gate(current_model, prepared.current.temperature, prepared.manifest.tau),
                Gate(enhanced.model, enhanced.temperature, new_tau), judged, noise_se=self.config.noise_se),
                tolerance=self.config.tolerance, demand=demand)
        margin = 0.0
        if field is not None and refitted_tau(enhanced) is not None and labour is not None:
            compared = at_equal_labour(current_model, prepared.current.temperature, enhanced, field,
                                       self._field_rules(demand), labour_demand=labour, human_accuracy=people,
                                       noise_se=self.config.noise_se)
            current, new, margin = compared.current, compared.new, compared.margin
            where = "held-out field labels at the labour demand"
        return check_fused(verdict, current, new, tolerance=self.config.tolerance,
                           demand=self.accuracy_demand(model_config, enhanced), judged_on=where, margin=margin)

    def _holdout_margin(self, prepared: Prepared, current_model: Any, new_model: Any, holdout: HumanLabels) -> float:
        """The held-out comparison's noise (`noise_se` paired standard errors), for kinds that score each sample."""
        per_sample = sample_scorer(prepared.kind)
        if per_sample is None or self.config.noise_se <= 0.0 or len(holdout) < self.config.min_holdout:
            return 0.0
        return paired_margin(per_sample(current_model, holdout), per_sample(new_model, holdout),
                             z=self.config.noise_se)


def run_metrics(prepared: Prepared, enhanced: Any, verdict: Acceptance, holdout_samples: int) -> dict[str, Any]:
    """What a run records: the verdict, the new temperature, training and field numbers."""
    metrics: dict[str, Any] = {"acceptance": verdict.to_dict(), "temperature": enhanced.temperature,
                               "train_seconds": enhanced.seconds, "train_samples": enhanced.train_samples,
                               "human_samples": len(prepared.human), "holdout_samples": holdout_samples}
    if isinstance(enhanced, Searched):
        metrics["research"] = {"tau": enhanced.tau, "plan": enhanced.summary.get("plan"),
                               "feasible": enhanced.summary.get("feasible"),
                               "search_seconds": enhanced.summary.get("search_seconds")}
    metrics.update(field_metrics(enhanced))
    if enhanced.style:
        metrics["field_style"] = dict(enhanced.style)
    return metrics
