"""`compile_hdnn`: dataset + demands + budgets + device -> searched, fine-tuned, calibrated H-DNN and its artifacts.

Steps: check what can be checked before training (output folder, signing key, int8 calibration images, the
user's model against the data set, budgets some plan can meet on paper); remove the previous run's artifacts from
the output folder; train the zoo backbone (built from the seed) or take the user's Keras file; search (strategy by
name); fine-tune the winner longer on the full training split; re-calibrate; measure A/T/S/E/L of origin and H-DNN
on the test split (never seen by the search); write search.jsonl, plan.json, model.keras, report.md, search.png,
summary.json; lower and sign the deployable bundle for the device's target.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from hgen.compiler.bundle.engines import BUNDLE_ENGINES
from hgen.compiler.data import Dataset, load_dataset, load_warnings, require_splits
from hgen.compiler.errors import CompilerError, InvalidArgumentError, UnknownNameError
from hgen.compiler.lowering.tflite import TFLiteModel, calibration_images
from hgen.compiler.preflight import check_int8_calibration, check_signing_key, clear_previous, prepare_out
from hgen.compiler.search import SearchResult, run_search
from hgen.compiler.search.budget import PaperBudget
from hgen.compiler.search.context import Budget, Candidate
from hgen.compiler.search.devices import DEVICES, DeviceProfile, get_device
from hgen.compiler.search.evaluator import Backbone, CandidateEvaluator, EvaluatorConfig, HeldOut
from hgen.compiler.search.final import finalise
from hgen.compiler.search.objective import Demands, Measured, violations
from hgen.compiler.search.quantised import quantise_final
from hgen.compiler.search.report import markdown_report, plot_candidates
from hgen.compiler.search.space import IDENTITY, SearchSpace, build_space
from hgen.compiler.search.tau import why_nobody_is_asked
from hgen.compiler.search.strategies import STRATEGIES, get_strategy
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.familiarity import DEFAULT_QUANTILE, Familiarity, fit_familiarity
from hgen.runtime.hdnn import FUSION_LAMBDA_DEFAULT, FusionLambda

if TYPE_CHECKING:
    from hgen.compiler.data.detection import DetectionDataset


class CompileConfig(StrictModel):
    """Everything `hgen-compile` takes."""

    model: str = Field("lenet5", title="Zoo model name, or a path to a Keras model file (.keras/.h5, logits out)")
    model_options: dict[str, float | int | bool | str] = Field(
        default_factory=dict, title="Zoo model options, e.g. alpha=0.35, weights=imagenet (mobilenet_v2)")
    dataset: str = Field("fashion-mnist:lowres", title="Dataset spec")
    device: str = Field("rpi4", title=f"Device profile: {', '.join(DEVICES.names())}")
    demands: Demands = Field(default_factory=Demands, title="Demands and budgets")
    strategy: str = Field("hgen", title=f"Search strategy: {', '.join(STRATEGIES.names())}")
    budget_minutes: float = Field(15.0, gt=0.0, title="Wall-time budget of the search (a fine-tune expected to end "
                                                      "past it is not started; base training and the final "
                                                      "fine-tune come on top)")
    episodes: int = Field(60, ge=1, title="Episode budget of the search")
    evaluations: int | None = Field(None, ge=1, title="Budget of distinct backbones evaluated")
    stop_at_feasible: bool = Field(True, title="Stop at the first candidate meeting every demand (Algorithm 1)")
    accuracy_confidence: float = Field(0.9, ge=0.0, lt=1.0,
                                       title="The search counts A as met when the accuracy's one-sided Wilson lower "
                                             "bound at this confidence does (0: the point estimate)")
    seed: int = Field(0, title="Seed of data splits, training, crowd and agents")
    base_epochs: int = Field(5, ge=1, title="Epochs to train a zoo backbone (with pretrained weights: fine-tune it)")
    bn_freeze_epochs: int = Field(3, ge=0, title="Zoo backbones with BatchNorm: epochs after base_epochs with its "
                                                 "statistics frozen, as the deployed (folded) network runs: int8 "
                                                 "then follows float more closely")
    head_epochs: int = Field(3, ge=0, title="With pretrained weights: epochs training the head on a frozen backbone "
                                            "before base_epochs of fine-tuning")
    final_epochs: int = Field(3, ge=1, title="Epochs of the winner's final distillation fine-tune")
    finetune_samples: int = Field(8000, ge=100, title="Training samples for each candidate's short fine-tune")
    limit: int | None = Field(None, ge=50, title="Cap on each split (quick runs)")
    m: int = Field(3, ge=1, le=4, title="Annotators per sample")
    annotator_accuracy: float = Field(0.9, ge=0.0, le=1.0, title="Accuracy of each simulated annotator")
    fusion_lambda: FusionLambda = FUSION_LAMBDA_DEFAULT
    out: str = Field("build/compile", title="Output folder")
    bundle: bool = Field(True, title="Lower, sign and write the deployable bundle")
    engines: tuple[str, ...] = Field(("litert",), title=f"Engines in the bundle: {', '.join(BUNDLE_ENGINES.names())}")
    quantize: Literal["float", "int8"] = Field(
        "float", title="What the device runs: int8 = full-integer LiteRT (S at 8 bits in the search and the report; "
                       "tau, temperature, A and L on the int8 model's outputs; search/quantised.py)")
    familiarity_quantile: float | None = Field(
        DEFAULT_QUANTILE, ge=0.0, lt=0.5,
        title="The familiarity check (hgen.runtime.familiarity): the device also asks people about a frame whose "
              "brightness, contrast or detail is outside the training images' range between this quantile and 1 - "
              "it; None: confidence alone decides")
    signing_key: str | None = Field(None, title="Ed25519 private key (PEM); a new one is made in OUT/keys if absent")
    model_version: str = Field("1.0.0", title="Semantic version written into the bundle")


def compile_config(**values: Any) -> CompileConfig:
    return compile_settings(values)


def compile_settings(values: Mapping[str, Any], source: str = "compile settings") -> CompileConfig:
    """Validate compile settings strictly (an unknown key is an error naming its key path) and check the names they
    give against the registries, before any data is loaded. `source` names them in the error (a --config file)."""
    config = parse_config(CompileConfig, values, source=source, error=InvalidArgumentError)
    if config.model_options:  # checked before any data is loaded: a typo must not cost a training run
        from hgen.compiler.models import model_config

        if _is_model_file(config):
            raise InvalidArgumentError("model options apply to zoo models, not to a model file")
        model_config(config.model, config.model_options)
    get_device(config.device)
    get_strategy(config.strategy)
    BUNDLE_ENGINES.check_choice(config.engines)  # before the training and the search, not at the bundle
    return config


@dataclass(frozen=True)
class CompileResult:
    summary: dict[str, Any]
    search: SearchResult | None  # None for a detection data set (no search: `compile_detect.py`)
    out: Path


@dataclass(frozen=True)
class PreparedBase:
    """The backbone before its training, and what was checked on it: its search space and its S/E costs on paper."""

    model: Any
    name: str
    space: SearchSpace
    paper: PaperBudget


def prepare_base(config: CompileConfig, data: Dataset, measured_as: EvaluatorConfig,
                 log: Callable[[str], None] = lambda message: None) -> PreparedBase:
    """The untrained backbone (or the user's model), its space and its paper budget, refused when no plan can meet
    S_c and E_c: the costs are structural, so this is known before the training and the search it would waste. The
    budget counts storage as the evaluator measures it (`measured_as.storage_bits`)."""
    model, name = _initial_model(config, data, measured_as.kind, log)
    space = build_space(model)
    paper = PaperBudget.build(model, space, config.demands.storage_mb, config.demands.energy_mj,
                              measured_as.storage_bits)
    paper.require_reachable()
    return PreparedBase(model, name, space, paper)


def _initial_model(config: CompileConfig, data: Dataset, kind: str, log: Callable[[str], None]) -> tuple[Any, str]:
    """The user's model file, checked against the data set (BatchNorm statistics settled, refused at chance: before
    the previous run's output is removed), or the zoo model with its weights initialised from `config.seed`: seeding
    only when training began left the initial weights to the process, so one command gave other numbers each run."""
    from hgen.compiler.bundle.names import model_name_from_file
    from hgen.compiler.models import build_model, check_model_file, load_model_file, model_names
    from hgen.compiler.models.user_file import prepare_user_model

    if _is_model_file(config):
        model = load_model_file(config.model)
        check_model_file(model, config.model, data.input_shape, data.num_classes)
        prepare_user_model(model, config.model, data, config.seed, log)
        return model, model_name_from_file(config.model, say=log)  # `Mein Modell ü` cannot name a bundle
    if config.model not in model_names(kind):
        raise UnknownNameError(f"unknown model '{config.model}'; valid choices: {', '.join(model_names(kind))} "
                               f"or a path to a .keras/.h5 file")
    return build_model(config.model, data.input_shape, data.num_classes, config.model_options,
                       seed=config.seed), config.model


def _is_model_file(config: CompileConfig) -> bool:
    return Path(config.model).suffix in (".keras", ".h5")


def _train_base(config: CompileConfig, model: Any, data: Dataset, log: Callable[[str], None]) -> None:
    """Train a zoo backbone in place (transfer-train it with pretrained weights); a user's model is not trained."""
    from hgen.compiler.train import TrainConfig, train_classifier

    if _is_model_file(config):
        return
    if config.model_options.get("weights"):
        from hgen.compiler.transfer import TransferConfig, transfer_train

        done = transfer_train(model, data.train, config=TransferConfig(
            head_epochs=config.head_epochs, finetune_epochs=config.base_epochs, seed=config.seed))
        log(f"transfer-trained {config.model}: head {config.head_epochs} epochs in {done.head_seconds:.1f} s, "
            f"fine-tune {config.base_epochs} epochs in {done.finetune_seconds:.1f} s")
        return
    seconds = train_classifier(model, data.train, config=TrainConfig(epochs=config.base_epochs, seed=config.seed,
                                                                     freeze_bn_epochs=config.bn_freeze_epochs))
    log(f"trained {config.model} for {config.base_epochs} epochs in {seconds:.1f} s")


def _row(measured: Measured, params: int, logits: Any, labels: Any) -> dict[str, Any]:
    """A/T/S/E/L (A with people) plus the backbone's own accuracy, so a weak model carried by people shows."""
    model_only = float((logits.argmax(axis=1) == labels).mean())
    return measured.to_dict() | {"accuracy_model_only": model_only, "params": int(params)}


def _progress(config: CompileConfig, log: Callable[[str], None]) -> Callable[[Candidate], None]:
    state = {"best": float("-inf"), "episode": 0}

    def report(candidate: Candidate) -> None:
        improved = candidate.reward > state["best"]
        state["best"] = max(state["best"], candidate.reward)
        if candidate.episode == state["episode"] and not improved:
            return
        state["episode"] = candidate.episode
        rate = candidate.elapsed_seconds / max(1, candidate.episode)
        eta = min(config.budget_minutes * 60 - candidate.elapsed_seconds, (config.episodes - candidate.episode) * rate)
        text = (f"episode {candidate.episode}/{config.episodes} | backbones {candidate.evaluations} | "
                f"best reward {state['best']:.3f} | ETA {max(0.0, eta):.0f} s")
        if candidate.feasible:
            text += f" | FEASIBLE A={candidate.measured.accuracy:.4f} L={candidate.measured.labour:.4f}"
        log(text)

    return report


def input_spec(data: Dataset) -> dict[str, Any]:
    """What the device must do to a camera frame so the model sees what it was trained on: the data set's recorded
    preprocessing (resize mode, padding), and uint8 -> [0, 1]."""
    pre = data.preprocess
    spec: dict[str, Any] = {"scale": 1.0 / (pre.scale if pre else 255.0), "offset": 0.0}
    if pre is not None:
        spec.update(resize=pre.resize, pad_value=pre.pad_value)
    return spec


def training_familiarity(data: Dataset | DetectionDataset, quantile: float | None) -> Familiarity | None:
    """The familiarity ranges of the training images, for image models and detectors (None for flat inputs or when
    off)."""
    if quantile is None or len(data.input_shape) != 3 or min(data.input_shape[:2]) < 3:
        return None
    return fit_familiarity(data.train.x, quantile)


def _write_bundle(config: CompileConfig, out: Path, final: Backbone, chosen: Candidate, data: Dataset,
                  device: DeviceProfile, predicted: Measured, evaluator: CandidateEvaluator, name: str,
                  lowered: TFLiteModel | None, log: Callable[[str], None]) -> dict[str, Any]:
    from hgen.compiler.bundle import pack_bundle, write_bundle
    from hgen.compiler.bundle.keys import generate_keypair

    key_path = Path(config.signing_key) if config.signing_key else out / "keys" / "signing.key"
    if not config.signing_key and not key_path.exists():  # reuse it next time, so devices keep trusting it
        generate_keypair(key_path.parent)
    bundle_dir = out / "bundle"
    info = write_bundle(
        bundle_dir, final.model, name=name, version=config.model_version, kind=evaluator.config.kind,
        target=device.target,
        labels=data.labels, input_spec=input_spec(data), tau=chosen.tau,
        temperature=final.temperature, fusion_lambda=config.fusion_lambda,
        confidence_params=_confidence_params(config.m, evaluator.difficulty),
        predicted_metrics=predicted.to_dict(), plan={"layers": chosen.plan, "ratios": evaluator.space.ratios},
        representative_data=calibration_images(data.train) if lowered else None,  # int8 only (and the phones' twin)
        engines=config.engines, quantize=config.quantize, lowered=lowered,
        familiarity=training_familiarity(data, config.familiarity_quantile), signing_key=key_path, overwrite=True)
    for message in (m for m in info.messages if "for phones" in m):  # was only in summary.json (GELU: no ONNX)
        log(f"warning: {message}" + ("" if info.manifest.web else "; phones cannot run this bundle"))
    archive = pack_bundle(bundle_dir)
    return {"dir": str(bundle_dir), "archive": str(archive), "signing_key": str(key_path),
            "public_key": str(key_path.with_suffix(".pub")),
            "messages": list(info.messages)}


def _confidence_params(m: int, difficulty: Any) -> dict[str, float]:
    """Flat numbers for the manifest: m and the difficulty estimator the device uses to count labour (Eq. 3)."""
    coef = {f"difficulty_coef_{i}": float(c) for i, c in enumerate(difficulty.coef)}
    return {"m": float(m), **coef, "difficulty_intercept": float(difficulty.intercept)}


def compile_hdnn(config: CompileConfig, log: Callable[[str], None] = lambda message: None, *,
                 data: Dataset | None = None) -> CompileResult:
    """Search, fine-tune, evaluate and (optionally) bundle. `data` replaces `config.dataset` when given: the hub's
    re-search passes the original data with the people's labels added to the training split. A detection data set
    compiles an H-YOLO bundle without a search (`compile_detect.py`)."""
    from hgen.compiler.data.detection import is_detection_spec

    if data is None and is_detection_spec(config.dataset):
        from hgen.compiler.compile_detect import compile_detector

        return compile_detector(config, log)
    start = time.perf_counter()
    out = prepare_out(config.out)
    check_signing_key(config.signing_key, config.bundle)
    device = get_device(config.device)
    data = data or load_dataset(config.dataset, seed=config.seed, limit=config.limit)
    require_splits(data)
    for warning in load_warnings(data):
        log(f"warning: {warning}")
    check_int8_calibration(config.quantize, len(data.train))
    log(f"dataset {data.name} from {data.origin}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    measured_as = EvaluatorConfig(finetune_samples=config.finetune_samples, m=config.m,
                                  annotator_accuracy=config.annotator_accuracy, fusion_lambda=config.fusion_lambda,
                                  seed=config.seed, storage_bits=8 if config.quantize == "int8" else 32)
    prepared = prepare_base(config, data, measured_as, log)
    if removed := clear_previous(out, inputs=(config.model, config.signing_key)):
        log(f"removed the previous run's {', '.join(removed)} from {out}")
    base, name, space = prepared.model, prepared.name, prepared.space
    _train_base(config, base, data, log)
    evaluator = CandidateEvaluator(base, data, space, device, measured_as)
    log(f"search space: {len(space.layers)} layers ({', '.join(l.name for l in space.layers)}), "
        f"{len(space.actions)} operators; strategy {config.strategy}")
    result, chosen = _search(config, evaluator, device, out, log, prepared.paper)
    test = evaluator.held_out(data.test)
    origin, origin_logits = _origin(evaluator, base, test)
    searched = chosen
    done = finalise(evaluator, chosen, config.final_epochs, config.demands, config.accuracy_confidence, test)
    extra: dict[str, Any] = {}  # for an int8 device: the model before quantisation, and the int8 model lowered
    lowered = None
    if config.quantize == "int8":
        extra["final_float"] = _row(done.measured, done.backbone.params, done.logits, data.test.y)
        done, lowered = quantise_final(evaluator, done, config.demands, config.accuracy_confidence, test, data.train,
                                       out)
        log(f"int8: model-only {extra['final_float']['accuracy_model_only']:.4f} as float, "
            f"{float((done.logits.argmax(1) == data.test.y).mean()):.4f} as int8 (test split)")
    final, chosen, measured, final_logits = done.backbone, done.candidate, done.measured, done.logits
    summary = _summary(config, data, device, result, chosen, final, measured, origin, base, name)
    summary["tau_search"] = searched.tau
    summary["origin"] = _row(origin, base.count_params(), origin_logits, data.test.y)
    summary["final"] = _row(measured, final.params, final_logits, data.test.y)
    summary |= {"quantize": config.quantize, **extra}
    if (why := _nobody_asked(config, evaluator, final, chosen, measured)) is not None:
        summary["nobody_asked"] = why
        log(f"nobody is sent to people (L 0): {why}")
    final.model.save(out / "model.keras")
    (out / "plan.json").write_text(json.dumps({"plan": chosen.plan, "ratios": space.ratios, "tau": chosen.tau,
                                               "temperature": final.temperature}, indent=2) + "\n")
    plot_candidates(result.candidates, out / "search.png", chosen)
    if config.bundle:
        summary["bundle"] = _write_bundle(config, out, final, chosen, data, device, measured, evaluator, name,
                                          lowered, log)
    summary["wall_seconds"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(summary))
    return CompileResult(summary, result, out)


def _nobody_asked(config: CompileConfig, evaluator: CandidateEvaluator, final: Backbone,
                  chosen: Candidate, measured: Measured) -> str | None:
    """Why, when the deployed tau asks nobody, on the validation split (where tau was chosen) and on the test split
    (the report's row), of a search that looked for people at all. A tau that asks nobody on validation may still
    ask about a few test images: the report then said "nobody is sent to people (L 0)" beside its own L > 0."""
    if chosen.tau_proposed is None or measured.labour > 0:
        return None
    sweep = evaluator.sweep(final, chosen.tau)
    if sweep.labour[np.flatnonzero(sweep.taus == chosen.tau)].max(initial=0.0) > 0:
        return None
    return why_nobody_is_asked(sweep, config.demands, final.latency_ms, config.accuracy_confidence)


def _search(config: CompileConfig, evaluator: CandidateEvaluator, device: DeviceProfile, out: Path,
            log: Callable[[str], None], paper: PaperBudget | None = None) -> tuple[SearchResult, Candidate]:
    """The H-Gen search, every candidate journalled to OUT/search.jsonl as it is measured; the best feasible plan
    (else the best one, reported as not feasible)."""
    with (out / "search.jsonl").open("w") as journal:
        def on_candidate(candidate: Candidate) -> None:
            journal.write(json.dumps(candidate.to_record()) + "\n")
            journal.flush()
            progress(candidate)

        progress = _progress(config, log)
        result = run_search(evaluator, config.demands, device, strategy=config.strategy, seed=config.seed,
                            budget=Budget(config.episodes, config.evaluations, config.budget_minutes * 60,
                                          config.stop_at_feasible), accuracy_confidence=config.accuracy_confidence,
                            on_candidate=on_candidate, paper=paper)
    chosen = result.best_feasible or result.best
    if chosen is None or chosen.measured is None:
        raise CompilerError(f"the search evaluated no valid candidate ({result.stop_reason})")
    log(f"search done in {result.wall_seconds:.0f} s: {result.stop_reason}; "
        f"{'feasible' if result.best_feasible else 'NO feasible candidate; best'} plan {chosen.plan}, tau {chosen.tau:.3f}"
        + (f" (DDPG proposed {chosen.tau_proposed:.3f})" if chosen.tau_proposed is not None else "")
        + f"; {result.skipped_on_paper} candidates skipped on paper (S/E over budget)")
    return result, chosen


def _origin(evaluator: CandidateEvaluator, base: Any, test: HeldOut) -> tuple[Measured, Any]:
    """The uncompressed backbone with nobody asked (tau = 0), on the test split."""
    from hgen.compiler.metrics import energy_mj, model_costs, storage_mb
    from hgen.compiler.metrics.latency import litert_latency_ms
    from hgen.compiler.train import predict_logits

    costs = model_costs(base)
    latency = evaluator.device.latency_ms(litert_latency_ms(base, evaluator.config.latency_repeats))
    backbone = Backbone(evaluator.space.identity_plan(), base, evaluator.base_temperature,
                        predict_logits(base, test.split.x), base.count_params(), costs.macs, storage_mb(costs),
                        energy_mj(costs), latency, 0.0)
    return evaluator.measure(backbone, 0.0, held_out=test), backbone.logits


def _summary(config: CompileConfig, data: Dataset, device: DeviceProfile, result: SearchResult, chosen: Candidate,
             final: Backbone, measured: Measured, origin: Measured, base: Any,
             name: str) -> dict[str, Any]:
    return {
        "model": name, "dataset": data.name, "dataset_origin": data.origin, "strategy": config.strategy,
        "seed": config.seed, "device": {"name": device.name, "processor": device.processor,
                                        "battery_mah": device.battery_mah, "latency_scale": device.latency_scale,
                                        "measured": device.measured, "target": device.target},
        "demands": config.demands.model_dump(), "episodes": max((c.episode for c in result.candidates), default=0),
        "evaluations": result.evaluations, "search_seconds": result.wall_seconds, "stop_reason": result.stop_reason,
        "feasible_in_search": result.best_feasible is not None, "search_reward": chosen.reward,
        "accuracy_bound": result.accuracy_bound,
        "search_accuracy_lower": chosen.accuracy_lower,
        "plan": {k: v for k, v in chosen.plan.items() if v != IDENTITY} or "identity", "tau": chosen.tau,
        "tau_proposed": chosen.tau_proposed, "skipped_on_paper": result.skipped_on_paper,
        "temperature": final.temperature, "violations": violations(measured, config.demands),
        "met_on_test": not violations(measured, config.demands),
        "annotators": "simulated",
    }
