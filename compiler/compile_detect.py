"""`compile_hdnn` for a detection data set (YOLO or COCO files, or `digits-det`): an H-YOLO bundle, or an
H-Faster-RCNN one with `--model two_stage_detector` (any zoo model of a kind with a `DetectorTraining` entry).

The compression search measures candidates with a crowd that answers classes, so it does not run for detection:
the zoo detector is trained on the data set, its temperature calibrated on the validation split, and tau chosen on
the validation split as the highest threshold whose labour (Eq. 3, with the difficulty estimate Eq. 9 the device
uses for both detection kinds) stays within the labour demand. A (mAP@0.5 of the model alone), T, S, E and L are
measured on the test split; the bundle is lowered and signed as for a classifier, with the model's kind and the
training canvases' familiarity ranges (`hgen.runtime.familiarity`: a dark or noisy field is asked about). With
`quantize=int8` the trained model is lowered to full-integer LiteRT first, and temperature, tau, A, S and L are
those of the int8 outputs a device computes (as `search/quantised.py` does for classifiers); the bundle ships that
very model. Summary and report say that no search ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.compiler.errors import CompilerError, InvalidArgumentError, UnknownNameError

if TYPE_CHECKING:
    from hgen.compiler.compile import CompileConfig, CompileResult
    from hgen.compiler.data.detection import DetectionDataset, DetectionSplit
    from hgen.compiler.search.objective import Measured
    from hgen.runtime.hdnn import FusionParams

NO_SEARCH = "no search: the compression search measures classifiers; detection compiles the zoo detector as is"


def model_named(config: CompileConfig) -> bool:
    """Whether the caller chose a model. Left out, or passed through as the classification default (as callers that
    forward every setting do), it stands for the default detector on detection data."""
    return config.model != type(config).model_fields["model"].default


def default_detector(names: list[str]) -> str:
    """The one zoo detector marked `default_detector` on its config type (not the first listed)."""
    from hgen.compiler.models import MODELS

    marked = [name for name in names if getattr(MODELS.get(name).config_type, "default_detector", False)]
    if len(marked) != 1:
        raise CompilerError(f"exactly one zoo detector must be marked default_detector, found {marked or 'none'}")
    return marked[0]


def detector(config: CompileConfig, data: DetectionDataset) -> tuple[Any, str, str]:
    """(model, zoo name, kind): a zoo detector built for the data set's input (the default detector when the compile
    was not given a model)."""
    from hgen.compiler.models import build_model, model_kind, model_names
    from hgen.compiler.models.detection_training import DETECTOR_TRAINING

    names = [n for kind in DETECTOR_TRAINING.names() for n in model_names(kind)]
    name = config.model if model_named(config) else default_detector(names)
    if name not in names:
        raise UnknownNameError(f"'{config.model}' is not a detection model; a detection data set compiles one of: "
                               f"{', '.join(names)}")
    return (build_model(name, data.input_shape, data.num_classes, config.model_options, seed=config.seed), name,
            model_kind(name))


def labour_at(confidence: np.ndarray, tau: float, m: int) -> float:
    """Eq. 3's labour ratio of the images gated at `tau`, with the device's H-YOLO difficulty estimate."""
    from hgen.runtime.hdnn import difficulty_from_confidence, needs_human
    from hgen.runtime.labour import labour_per_sample, labour_ratio

    gate = needs_human(confidence, tau)
    total = float(np.sum(labour_per_sample(difficulty_from_confidence(confidence[gate]), m))) if gate.any() else 0.0
    return labour_ratio(total, len(confidence))


def choose_tau(confidence: np.ndarray, labour_demand: float, m: int) -> float:
    """The highest threshold (a confidence seen on the split, or 0) whose labour stays within the demand."""
    best = 0.0
    for tau in np.unique(np.clip(confidence, 0.0, 1.0)):
        if labour_at(confidence, float(tau), m) <= labour_demand:
            best = max(best, float(tau))
    return best


def measure(outputs: np.ndarray, kind_name: str, split: DetectionSplit, num_classes: int, params: FusionParams,
            tau: float, m: int, latency_ms: float, storage: float,
            costs: Any) -> tuple[Measured, dict[str, float]]:
    """A = mAP@0.5 of the model alone from its `outputs` on `split` (no people simulated for boxes here), T, S, E and
    L at tau."""
    from hgen.compiler.metrics import energy_mj
    from hgen.compiler.metrics.detection import mean_average_precision
    from hgen.compiler.search.objective import Measured
    from hgen.runtime.hdnn import get_kind, needs_human

    kind = get_kind(kind_name)
    confidence = kind.confidence(outputs, params)
    score = mean_average_precision(kind.predict(outputs, params), split.boxes, num_classes)
    measured = Measured(score, latency_ms, storage, energy_mj(costs), labour_at(confidence, tau, m))
    return measured, {"map50_model_only": score, "share_to_people": float(needs_human(confidence, tau).mean())}


@dataclass(frozen=True)
class Runner:
    """The outputs of the model the device will run: the Keras model's, or (int8) the full-integer LiteRT model's,
    dequantised, so temperature, tau, A and L are those of what ships. `lowered` is the int8 model the bundle
    ships (None: the bundle lowers the Keras model itself)."""

    outputs: Callable[[np.ndarray], np.ndarray]
    weight_bits: int
    lowered: Any = None


def runner(config: CompileConfig, model: Any, kind: str, data: DetectionDataset, out: Path) -> Runner:
    from hgen.compiler.models.detection_training import detector_training

    if config.quantize == "float":
        return Runner(lambda x: detector_training(kind).predict(model, x), 32)
    from hgen.compiler.lowering.tflite import calibration_images, lower_tflite
    from hgen.compiler.search.quantised import int8_logits
    from hgen.runtime.engines import open_engine

    lowered = lower_tflite(model, quantize="int8", representative_data=calibration_images(data.train))
    engine = open_engine("litert", lowered.save(out / "model.int8.tflite"))
    return Runner(lambda x: np.asarray(int8_logits(engine, x), np.float64), 8, lowered)


def compile_detector(config: CompileConfig, log: Callable[[str], None] = lambda message: None) -> CompileResult:
    """Train, calibrate, choose tau, measure on the test split, write model/plan/report/summary and the bundle."""
    from hgen.compiler.compile import CompileResult, _is_model_file
    from hgen.compiler.data import load_warnings, require_boxes, require_splits
    from hgen.compiler.data.detection import load_detection_dataset
    from hgen.compiler.metrics import model_costs, storage_mb
    from hgen.compiler.metrics.latency import litert_latency_ms
    from hgen.compiler.models.detection_training import detector_training
    from hgen.compiler.preflight import check_int8_calibration, check_signing_key, clear_previous, prepare_out
    from hgen.compiler.search.devices import get_device
    from hgen.compiler.search.objective import violations
    from hgen.runtime.hdnn import FusionParams, get_kind

    if _is_model_file(config):
        raise InvalidArgumentError("a detection data set compiles a zoo detector; a model file is not supported yet")
    start = time.perf_counter()
    out = prepare_out(config.out)
    check_signing_key(config.signing_key, config.bundle)
    device = get_device(config.device)
    data = load_detection_dataset(config.dataset, seed=config.seed, limit=config.limit)
    require_splits(data)
    require_boxes(data)
    for warning in load_warnings(data):
        log(f"warning: {warning}")
    check_int8_calibration(config.quantize, len(data.train))
    log(f"detection dataset {data.name} from {data.origin}: {len(data.train)} train / {len(data.val)} val / "
        f"{len(data.test)} test; {NO_SEARCH}")
    model, name, kind = detector(config, data)
    if removed := clear_previous(out, inputs=(config.model, config.signing_key)):
        log(f"removed the previous run's {', '.join(removed)} from {out}")
    training = detector_training(kind)
    if warning := training.unlearnt(model, data.train):
        log(f"warning: {warning}")
    seconds = training.train(model, data.train, data.num_classes, config.base_epochs, config.seed)
    run = runner(config, model, kind, data, out)
    val_outputs = run.outputs(data.val.x)
    temperature = training.temperature(val_outputs, data.val.boxes, data.num_classes)
    params = FusionParams(temperature, config.fusion_lambda)
    tau = choose_tau(get_kind(kind).confidence(val_outputs, params), config.demands.labour, config.m)
    log(f"trained {name} ({kind}) for {config.base_epochs} epochs in {seconds:.1f} s; {config.quantize}: "
        f"temperature {temperature:.3f}, tau {tau:.3f} (highest within L <= {config.demands.labour} on the "
        "validation split)")
    latency = device.latency_ms(litert_latency_ms(model))
    costs = model_costs(model)
    measured, extra = measure(run.outputs(data.test.x), kind, data.test, data.num_classes, params, tau, config.m,
                              latency, storage_mb(costs, run.weight_bits, run.weight_bits), costs)
    row = measured.to_dict() | extra | {"accuracy_model_only": measured.accuracy, "params": int(model.count_params())}
    summary = _summary(config, data, device, name, kind, tau, temperature, measured, row,
                       violations(measured, config.demands))
    summary |= {"quantize": config.quantize} | _float_row(config, model, kind, data, params)
    model.save(out / "model.keras")
    (out / "plan.json").write_text(json.dumps({"plan": {}, "ratios": [], "tau": tau, "temperature": temperature},
                                              indent=2) + "\n")
    if config.bundle:
        summary["bundle"] = _bundle(config, out, model, name, kind, data, device, tau, temperature, measured,
                                    run.lowered)
    summary["wall_seconds"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report(summary))
    return CompileResult(summary, None, out)


def _summary(config: CompileConfig, data: DetectionDataset, device: Any, name: str, kind: str, tau: float,
             temperature: float, measured: Measured, row: dict[str, Any], violated: list[str]) -> dict[str, Any]:
    return {
        "model": name, "kind": kind, "dataset": data.name, "dataset_origin": data.origin, "strategy": "none",
        "search": NO_SEARCH, "seed": config.seed,
        "device": {"name": device.name, "processor": device.processor, "battery_mah": device.battery_mah,
                   "latency_scale": device.latency_scale, "measured": device.measured, "target": device.target},
        "demands": config.demands.model_dump(), "accuracy_metric": "mAP@0.5 (model only)", "episodes": 0,
        "evaluations": 1, "search_seconds": 0.0, "stop_reason": NO_SEARCH, "plan": "identity", "tau": tau,
        "tau_proposed": None, "temperature": temperature, "origin": row, "final": row, "violations": violated,
        "met_on_test": not violated, "annotators": "simulated",
    }


def _float_row(config: CompileConfig, model: Any, kind: str, data: DetectionDataset,
               params: FusionParams) -> dict[str, Any]:
    """For an int8 device, the float model's mAP@0.5 (model only) on the test split at the int8 temperature: what
    quantisation cost."""
    if config.quantize == "float":
        return {}
    from hgen.compiler.metrics.detection import mean_average_precision
    from hgen.compiler.models.detection_training import detector_training
    from hgen.runtime.hdnn import get_kind

    outputs = detector_training(kind).predict(model, data.test.x)
    score = mean_average_precision(get_kind(kind).predict(outputs, params), data.test.boxes, data.num_classes)
    return {"final_float": {"accuracy_model_only": score}}


def _bundle(config: CompileConfig, out: Path, model: Any, name: str, kind: str, data: DetectionDataset, device: Any,
            tau: float, temperature: float, measured: Measured, lowered: Any) -> dict[str, Any]:
    from hgen.compiler.bundle import pack_bundle, write_bundle
    from hgen.compiler.bundle.keys import generate_keypair
    from hgen.compiler.compile import input_spec, training_familiarity
    from hgen.compiler.lowering.tflite import calibration_images

    key_path = Path(config.signing_key) if config.signing_key else out / "keys" / "signing.key"
    if not config.signing_key and not key_path.exists():
        generate_keypair(key_path.parent)
    info = write_bundle(out / "bundle", model, name=name, version=config.model_version, kind=kind,
                        target=device.target, labels=data.labels, input_spec=input_spec(data), tau=tau,
                        temperature=temperature, fusion_lambda=config.fusion_lambda,
                        confidence_params={"m": float(config.m)}, predicted_metrics=measured.to_dict(),
                        plan={"layers": {}}, representative_data=calibration_images(data.train),
                        engines=config.engines, quantize=config.quantize, lowered=lowered,
                        familiarity=training_familiarity(data, config.familiarity_quantile),
                        signing_key=key_path, overwrite=True)
    archive = pack_bundle(out / "bundle")
    return {"dir": str(out / "bundle"), "archive": str(archive), "signing_key": str(key_path),
            "public_key": str(key_path.with_suffix(".pub")), "messages": list(info.messages)}


def report(summary: dict[str, Any]) -> str:
    row, d = summary["final"], summary["demands"]
    return "\n".join([
        f"# hgen-compile report: {summary['model']} ({summary['kind']}) on {summary['dataset']} for `{summary['device']['name']}`",
        "", f"{NO_SEARCH}. Annotators are SIMULATED only where people are counted (labour at tau).", "",
        (f"Demands: A >= {d['accuracy']} (here mAP@0.5 of the model alone), T <= {d['latency_ms']} ms, "
         f"S <= {d['storage_mb']} MB, E <= {d['energy_mj']} mJ, L <= {d['labour']}."), "",
        "| | mAP@0.5 (model only) | T (ms) | S (MB) | E (mJ) | L | share to people | params |",
        "|---|---|---|---|---|---|---|---|",
        (f"| detector (test) | {row['accuracy']:.4f} | {row['latency_ms']:.2f} | {row['storage_mb']:.4f} | "
         f"{row['energy_mj']:.4f} | {row['labour']:.4f} | {row['share_to_people']:.4f} | {row['params']} |"), "",
        f"tau = {summary['tau']:.3f}; temperature = {summary['temperature']:.3f}.", "", *_precision_lines(summary),
        "Violations: " + ("; ".join(summary["violations"]) or "none") + ".", ""])


def _precision_lines(summary: dict[str, Any]) -> list[str]:
    """What the device runs, and for int8 what quantisation cost (tau, temperature and the row are the int8 model's)."""
    if summary.get("quantize") != "int8":
        return []
    return [(f"The device runs the full-integer (int8) model: tau, temperature and the row above are measured on its "
             f"outputs; the float model reached mAP@0.5 {summary['final_float']['accuracy_model_only']:.4f} on the same "
             "test split."), ""]
