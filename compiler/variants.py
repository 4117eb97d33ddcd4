"""`compile_variants`: the compile's search, then up to K variants from its Pareto front in one signed variant set
(issue 22, AdaSpring), so the device can choose by context without retraining.

Each variant is fine-tuned and calibrated like the compile's winner (`CandidateEvaluator.final`: own temperature),
gets a tau per labour level (the most accurate tau on the search split whose labour's upper confidence bound meets
the level; level 0 is tau 0, nobody asked) and is measured on the test split at each level; its latency, storage
and energy are the device profile's, its memory an estimate (stored weights plus the widest layer's float32 input
and output). Members are ordinary signed bundles (`<name>.hgb`); `variants.json` pins them and is signed with the
same key; OUT/variants.hgv is the same set as one file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.compile import CompileConfig, _confidence_params, _train_base, input_spec, prepare_base
from hgen.compiler.data import Dataset, load_dataset, require_splits
from hgen.compiler.errors import CompilerError
from hgen.compiler.preflight import check_signing_key, prepare_out
from hgen.compiler.search import run_search
from hgen.compiler.search.context import Budget, Candidate
from hgen.compiler.search.devices import get_device
from hgen.compiler.search.evaluator import Backbone, CandidateEvaluator, EvaluatorConfig
from hgen.runtime.bundle.variants import (BudgetEntry, VariantEntry, VariantIndex, member_entry, pack_variant_set,
                                          write_index)

DEFAULT_K = 4
LABOUR_LEVELS = (0.0, 0.02, 0.05, 0.1)
OBJECTIVES = (("accuracy", 1.0), ("latency_ms", -1.0), ("storage_mb", -1.0), ("energy_mj", -1.0), ("labour", -1.0))


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other one beats on every objective (higher A, lower T, S, E, L), one per distinct plan."""
    scored = {json.dumps(c.plan, sort_keys=True): c for c in candidates
              if c.measured is not None and not c.skipped_on_paper}
    rows = list(scored.values())
    values = np.array([[sign * getattr(c.measured, name) for name, sign in OBJECTIVES] for c in rows])
    front = []
    for i, candidate in enumerate(rows):
        dominated = np.any(np.all(values >= values[i], axis=1) & np.any(values > values[i], axis=1))
        if not dominated:
            front.append(candidate)
    return front


def spread(front: list[Candidate], k: int) -> list[Candidate]:
    """Up to k of the front, spread over energy, by descending energy. The most accurate is always in, the leanest
    too from k = 2 (the device's options at the two ends of the trade-off); the rest fills evenly over energy."""
    if len(front) <= k:
        return sorted(front, key=lambda c: -c.measured.energy_mj)  # type: ignore[union-attr]
    by_energy = sorted(front, key=lambda c: c.measured.energy_mj)  # type: ignore[union-attr]
    best = max(range(len(by_energy)), key=lambda i: by_energy[i].measured.accuracy)  # type: ignore[union-attr]
    picks = [best, 0][:k]  # must-haves first, so filling up to k never pushes them out
    for position in np.linspace(0, len(by_energy) - 1, k):
        if len(set(picks)) >= k:
            break
        picks.append(int(round(position)))
    for i in range(len(by_energy)):  # rounding can land twice on one index: fill with the next ones
        if len(set(picks)) >= k:
            break
        picks.append(i)
    return [by_energy[i] for i in sorted(set(picks), reverse=True)]


def memory_mb(model: Any, storage_mb: float) -> float:
    """The stored weights plus the widest layer's float32 input and output: an estimate of the resident memory."""
    from hgen.compiler.metrics.costs import model_costs

    costs = model_costs(model)
    widest = max([layer.activations for layer in costs.layers] + [costs.input_activations])
    return storage_mb + 2 * widest * 4 / 1e6


def levels(evaluator: CandidateEvaluator, final: Backbone, test: Any, test_logits: np.ndarray,
           labour_levels: Sequence[float], confidence: float) -> list[dict[str, float]]:
    """Per labour level, the most accurate tau whose labour's upper bound (at `confidence`) on the search split meets
    it, measured on the test split; levels that end on the same tau keep the lowest."""
    rows: dict[float, dict[str, float]] = {}
    for level in sorted(labour_levels):
        tau = 0.0 if level <= 0 else evaluator.refine_tau(final, 0.0, level, confidence).tau
        measured = evaluator.measure(final, tau, held_out=test, logits=test_logits)
        rows.setdefault(round(tau, 6), {"labour": float(level), "tau": tau, "accuracy": measured.accuracy,
                                        "labour_measured": min(1.0, measured.labour)})
    return sorted(rows.values(), key=lambda r: r["labour"])


@dataclass(frozen=True)
class _Shipping:
    """What every variant of one compile is built with."""

    config: CompileConfig
    evaluator: CandidateEvaluator
    data: Dataset
    test: Any  # the evaluator's held-out test split
    name: str
    kind: str
    target: str
    out: Path
    key_path: Path
    labour_levels: tuple[float, ...]
    log: Callable[[str], None]


def _variant(ship: _Shipping, i: int, candidate: Candidate) -> VariantEntry | None:
    """Fine-tune, calibrate and measure one front plan, then lower, sign and pack it as member `v<i>` (None when the
    plan no longer applies)."""
    from hgen.compiler.bundle import pack_bundle, write_bundle
    from hgen.compiler.train import predict_logits

    config, evaluator, data, test = ship.config, ship.evaluator, ship.data, ship.test
    final = evaluator.final(candidate.plan, config.final_epochs)
    if final.error:
        ship.log(f"variant {i}: plan no longer applies ({final.error}); skipped")
        return None
    logits = predict_logits(final.model, test.split.x)
    rows = levels(evaluator, final, test, logits, ship.labour_levels, config.accuracy_confidence)
    variant = f"v{i}"
    write_bundle(ship.out / "members" / variant, final.model, name=ship.name,
                 version=f"{config.model_version}+{variant}", kind=ship.kind, target=ship.target, labels=data.labels,
                 input_spec=input_spec(data), tau=rows[-1]["tau"], temperature=final.temperature,
                 fusion_lambda=config.fusion_lambda, confidence_params=_confidence_params(config.m,
                                                                                          evaluator.difficulty),
                 predicted_metrics={"accuracy": rows[-1]["accuracy"], "latency_ms": final.latency_ms,
                                    "storage_mb": final.storage_mb, "energy_mj": final.energy_mj,
                                    "labour": rows[-1]["labour_measured"]},
                 plan={"layers": candidate.plan}, representative_data=data.train.x[:200], engines=config.engines,
                 web=(), signing_key=ship.key_path, overwrite=True)
    archive = pack_bundle(ship.out / "members" / variant, ship.out / "variants" / f"{variant}.hgb")
    ship.log(f"variant {variant}: A {rows[0]['accuracy']:.4f}..{rows[-1]['accuracy']:.4f} over L "
             f"{rows[0]['labour_measured']:.3f}..{rows[-1]['labour_measured']:.3f}, T {final.latency_ms:.1f} ms, "
             f"E {final.energy_mj:.3f} mJ, S {final.storage_mb:.3f} MB")
    return member_entry(
        archive, name=variant, temperature=final.temperature,
        accuracy_model_only=float((logits.argmax(axis=1) == data.test.y).mean()), latency_ms=final.latency_ms,
        storage_mb=final.storage_mb, energy_mj=final.energy_mj,
        memory_mb=memory_mb(final.model, final.storage_mb), levels=rows, plan=candidate.plan)


def compile_variants(config: CompileConfig, k: int = DEFAULT_K, labour_levels: Sequence[float] = LABOUR_LEVELS,
                     log: Callable[[str], None] = lambda message: None, *,
                     data: Dataset | None = None) -> dict[str, Any]:
    """Search, then fine-tune, calibrate, measure, lower and sign up to `k` front variants into OUT/variants."""
    from hgen.compiler.bundle.keys import generate_keypair

    start = time.perf_counter()
    out = prepare_out(config.out)
    check_signing_key(config.signing_key, True)  # variants are always signed
    device = get_device(config.device)
    data = data or load_dataset(config.dataset, seed=config.seed, limit=config.limit)
    require_splits(data)
    measured_as = EvaluatorConfig(finetune_samples=config.finetune_samples, m=config.m,
                                  annotator_accuracy=config.annotator_accuracy, fusion_lambda=config.fusion_lambda,
                                  seed=config.seed)
    prepared = prepare_base(config, data, measured_as)
    base, name = prepared.model, prepared.name
    _train_base(config, base, data, log)
    evaluator = CandidateEvaluator(base, data, prepared.space, device, measured_as)
    result = run_search(evaluator, config.demands, device, strategy=config.strategy, seed=config.seed,
                        budget=Budget(config.episodes, config.evaluations, config.budget_minutes * 60, False),
                        accuracy_confidence=config.accuracy_confidence, paper=prepared.paper)
    front = pareto_front(result.candidates)
    if not front:
        raise CompilerError(f"the search evaluated no valid candidate ({result.stop_reason})")
    chosen = spread(front, k)
    log(f"search: {len(result.candidates)} candidates, Pareto front {len(front)}, shipping {len(chosen)}")
    key_path = Path(config.signing_key) if config.signing_key else out / "keys" / "signing.key"
    if not config.signing_key and not key_path.exists():
        generate_keypair(key_path.parent)
    root = out / "variants"
    root.mkdir(parents=True, exist_ok=True)
    test = evaluator.held_out(data.test)
    shipping = _Shipping(config, evaluator, data, test, name, measured_as.kind, device.target, out, key_path,
                         tuple(labour_levels), log)
    built = [_variant(shipping, i, candidate) for i, candidate in enumerate(chosen)]
    entries = [entry for entry in built if entry is not None]
    if not entries:
        raise CompilerError("no variant of the Pareto front could be built")
    d = config.demands
    index = VariantIndex(name=name, version=config.model_version, target=device.target, variants=tuple(entries),
                         demands=BudgetEntry(accuracy=d.accuracy, latency_ms=d.latency_ms, storage_mb=d.storage_mb,
                                             energy_mj=d.energy_mj))
    write_index(root, index, key_path)
    archive = pack_variant_set(root)
    return {"dir": str(root), "archive": str(archive), "public_key": str(key_path.with_suffix(".pub")),
            "variants": len(entries),
            "front": len(front), "candidates": len(result.candidates), "wall_seconds": time.perf_counter() - start,
            "index": json.loads(index.to_bytes())}
