"""Engines benchmark: per-sample latency (batch 1, median after warm-up) of every engine on this host.

Models: LeNet-5 (ours, trained briefly on scikit-learn digits), Keras' MobileNetV2 at 96x96 with random
weights (a third-party architecture, no download), and the search's H-CNN (`--hcnn`, default table2's phone row).
Reference: the bare LiteRT float `invoke()` loop (input already set); every row is a ratio to it, so the
overheads of each engine's Python API (quantise, copy, dispatch) are visible next to the kernels' cost.
TVM runs untuned (default relax pipeline) and MetaSchedule-tuned on this host with a small fixed trial budget
per model (TUNE_BUDGETS); tuning is skipped, and the reason recorded, when its dependencies are missing.

Run: .venv/bin/python tools/bench/engines.py [--repeats 300] [--models lenet5,mobilenetv2] [--no-tune]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import calibrate_batch_norm, machine, markdown_table, write_results

from hgen.compiler.lowering import lower_tflite, lower_tvm
from hgen.compiler.lowering.tuning import TuneConfig, TuningDependencyError
from hgen.compiler.models import build_model
from hgen.runtime.engines import open_engine
from hgen.runtime.engines.litert import interpreter_class

AGREEMENT_SAMPLES = 200
# Every task gets 8 trials: LeNet-5 has 8 tasks; MobileNetV2-96 has 32 (float) / 55 (int8), of which the 32
# heaviest (about 96% of the int8 FLOPs) are tuned.
TUNE_BUDGETS = {
    "lenet5": TuneConfig(trials=64, trials_per_task=8),
    "hcnn": TuneConfig(trials=64, trials_per_task=8),
    "mobilenetv2-96": TuneConfig(trials=256, trials_per_task=8, max_tasks=32),
}


@dataclass(frozen=True)
class Subject:
    name: str
    model: Any
    images: np.ndarray  # test inputs for top-1 agreement
    calibration: np.ndarray  # representative data for int8


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median microseconds of `fn` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.pad(np.kron(digits.images, np.ones((3, 3))) / 16.0, ((0, 0), (2, 2), (2, 2)))[..., None]
    return images.astype(np.float32), digits.target


def lenet_subject() -> Subject:
    import keras

    keras.utils.set_random_seed(0)
    images, labels = digits_28()
    model = build_model("lenet5", (28, 28, 1), 10)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[:1000], labels[:1000], epochs=4, batch_size=32, verbose=0)
    return Subject("lenet5", model, images[1000 : 1000 + AGREEMENT_SAMPLES], images[:300])


def mobilenet_subject() -> Subject:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (AGREEMENT_SAMPLES + 300, 96, 96, 3)).astype(np.float32)
    calibrate_batch_norm(model, images[AGREEMENT_SAMPLES:])
    return Subject("mobilenetv2-96", model, images[:AGREEMENT_SAMPLES], images[AGREEMENT_SAMPLES:])


HCNN_DEFAULT = Path("build/bench/table2/hgen-phone/model.keras")


def hcnn_subject(path: Path = HCNN_DEFAULT) -> Subject:
    """The search's H-CNN backbone: `model.keras` written by hgen-compile (default: table2's phone row)."""
    from hgen.compiler.data import load_dataset
    from hgen.compiler.models import load_model_file

    if not path.is_file():
        raise SystemExit(f"no H-CNN at {path}: run tools/bench/table2.py (or hgen-compile) first, or pass --hcnn")
    data = load_dataset("fashion-mnist:lowres", limit=AGREEMENT_SAMPLES + 300)
    return Subject("hcnn", load_model_file(path), data.test.x[:AGREEMENT_SAMPLES], data.train.x[:300])


SUBJECTS = {"lenet5": lenet_subject, "hcnn": hcnn_subject, "mobilenetv2": mobilenet_subject}


def invoke_loop_us(path: Path, repeats: int, warmup: int, threads: int) -> float:
    """The physical reference: the interpreter's invoke() alone, input set once."""
    interpreter = interpreter_class()(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    return timed(interpreter.invoke, repeats, warmup)


def measure(subject: Subject, repeats: int, warmup: int, threads: int, work: Path, tune: bool) -> list[dict[str, Any]]:
    """One row per engine for `subject`."""
    model, images, one = subject.model, subject.images, subject.images[:1]
    reference = model.predict(images, batch_size=50, verbose=0).argmax(1)
    keras_path = work / f"{subject.name}.keras"
    model.save(keras_path)
    rows = [_row(subject.name, "keras", timed(lambda: model(one, training=False), repeats, warmup), keras_path, 1.0)]

    float_model = lower_tflite(model, quantize="float")
    int8_model = lower_tflite(model, quantize="int8", representative_data=subject.calibration)
    for precision, tflite in (("float32", float_model), ("int8", int8_model)):
        path = tflite.save(work / f"{subject.name}.{precision}.tflite")
        rows.append(_row(subject.name, f"litert-invoke-{precision}", invoke_loop_us(path, repeats, warmup, threads), path, None))
        engine = open_engine("litert", path, {"num_threads": threads})
        rows.append(_engine_row(subject.name, f"litert-{precision}", engine, path, one, images, reference, repeats, warmup))
        budgets = [None, TUNE_BUDGETS[subject.name]] if tune else [None]
        for budget in budgets:
            row = tvm_row(subject, precision, tflite, budget, work, reference, repeats, warmup)
            if row:
                rows.append(row)
    invoke = next(r["median_us"] for r in rows if r["engine"] == "litert-invoke-float32")
    for row in rows:
        row["ratio_to_invoke"] = round(row["median_us"] / invoke, 2)
    return rows


TUNING_SKIPPED: list[str] = []


def tvm_row(subject: Subject, precision: str, tflite: Any, budget: TuneConfig | None, work: Path,
            reference: np.ndarray, repeats: int, warmup: int) -> dict[str, Any] | None:
    """The TVM row, untuned (budget None) or tuned; None, with the reason kept, if tuning is unavailable."""
    kind = "untuned" if budget is None else "tuned"
    start = time.perf_counter()
    try:
        library = lower_tvm(tflite.content, "x86_64", work / f"{subject.name}.{precision}.{kind}", tuning=budget)
    except TuningDependencyError as exc:
        TUNING_SKIPPED.append(f"{subject.name} {precision}: {exc}")
        return None
    compile_s = time.perf_counter() - start
    config = {"input_shape": list(tflite.input_shape), "output_shape": list(tflite.output_shape),
              "precision": precision}
    if tflite.input_quant:
        config["input_quantization"] = vars(tflite.input_quant)
        config["output_quantization"] = vars(tflite.output_quant)
    engine = open_engine("tvm", library.path, config)
    one = subject.images[:1]
    row = _engine_row(subject.name, f"tvm-{kind}-{precision}", engine, library.path, one, subject.images, reference,
                      repeats, warmup)
    row["compile_s"] = round(compile_s, 1)
    row["tune_trials"] = budget.trials if budget else None
    return row


def _row(model: str, engine: str, median_us: float, path: Path, agreement: float | None) -> dict[str, Any]:
    return {"model": model, "engine": engine, "median_us": round(median_us, 1), "ratio_to_invoke": None,
            "file_bytes": path.stat().st_size, "top1_agreement": agreement}


def _engine_row(model, name, engine, path, one, images, reference, repeats, warmup) -> dict[str, Any]:
    agreement = float(np.mean(engine.run(images).argmax(1) == reference))
    return _row(model, name, timed(lambda: engine.run(one), repeats, warmup), path, round(agreement, 4))


def int8_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Say, per model and engine family, whether int8 is actually faster than float here."""
    lines = []
    by_key = {(r["model"], r["engine"]): r["median_us"] for r in rows}
    for model in sorted({r["model"] for r in rows}):
        for family in ("litert-invoke", "litert", "tvm-untuned", "tvm-tuned"):
            fp, q = by_key.get((model, f"{family}-float32")), by_key.get((model, f"{family}-int8"))
            if fp and q:
                verdict = "faster" if q < fp else "NOT faster"
                lines.append(f"- {model}, {family}: int8 is {verdict} than float32 ({q:.1f} us vs {fp:.1f} us, speed-up x{fp / q:.2f}).")
    return lines


def tuning_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per model and precision: tuned vs untuned TVM, tuned TVM vs LiteRT, and what the tuning cost."""
    lines = []
    by_key = {(r["model"], r["engine"]): r for r in rows}
    for (model, engine), tuned in by_key.items():
        if not engine.startswith("tvm-tuned-"):
            continue
        precision = engine.removeprefix("tvm-tuned-")
        untuned, litert = by_key[(model, f"tvm-untuned-{precision}")], by_key[(model, f"litert-{precision}")]
        lines.append(
            f"- {model} {precision}: {tuned['tune_trials']} trials, {tuned['compile_s']:.0f} s of tuning + compile; "
            f"tuned {tuned['median_us']:.1f} us vs untuned {untuned['median_us']:.1f} us "
            f"(x{untuned['median_us'] / tuned['median_us']:.2f}), vs LiteRT {litert['median_us']:.1f} us "
            f"(tuned TVM is x{tuned['median_us'] / litert['median_us']:.2f} the LiteRT time)."
        )
    return lines


def tuning_section(rows: list[dict[str, Any]]) -> list[str]:
    budgets = ", ".join(
        f"{name}: {b.trials} trials (<= {b.trials_per_task} per task"
        + (f", the {b.max_tasks} heaviest tasks)" if b.max_tasks else ", all tasks)")
        for name, b in TUNE_BUDGETS.items()
    )
    if TUNING_SKIPPED:
        return ["## TVM tuned (MetaSchedule)", "Not measured in this run:", *(f"- {why}" for why in TUNING_SKIPPED)]
    config = next(iter(TUNE_BUDGETS.values()))
    return [
        "## TVM tuned (MetaSchedule)",
        f"Budgets: {budgets}.",
        f"Search: `{config.strategy}` with the `{config.cost_model}` cost model; candidates built {config.builder}",
        "and timed by TVM's LocalRunner (3 runs, >= 20 ms each), records kept in memory",
        "(`hgen.compiler.lowering.tuning`). `compile_s` of a tuned row = wall time of tuning plus compiling on the",
        "2 shared cores. The first tuned row also pays, once per process, TVM's import of its tensor intrinsics:",
        "~10 s alone, 30-40 s with TensorFlow loaded (TVMScript calls `inspect.getmodule`, which scans every module).",
        "Needs apache-tvm-ffi 0.1.14.post1 (0.1.15.* segfaults in `tvm::ffi::ToJSONGraph`) and psutil.",
        "",
        *tuning_verdicts(rows),
        "",
        "Every task got at most 8 candidates: larger budgets (or the `xgb` cost model) may find faster schedules.",
    ]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any]) -> str:
    columns = ["model", "engine", "median_us", "ratio_to_invoke", "file_bytes", "top1_agreement", "compile_s",
               "tune_trials"]
    shown = [{k: ("n/a" if v is None else v) for k, v in row.items()} for row in rows]
    return "\n".join([
        "# Engines: per-sample latency on the host",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, no GPU, {info['os']}.",
        f"Method: batch 1, {args.warmup} warm-up calls, then the median of {args.repeats} timed calls "
        f"(time.perf_counter around one call). LiteRT with num_threads={args.threads}; TVM's default thread pool.",
        "`ratio_to_invoke` = median / median of the bare LiteRT float32 `invoke()` loop (input set once).",
        "`litert-*` and `tvm-*` rows time `Engine.run`, i.e. including input checks, int8 (de)quantisation and copies.",
        f"`top1_agreement` = argmax agreement with the Keras model on {AGREEMENT_SAMPLES} inputs (digits for LeNet-5,",
        "uniform noise for MobileNetV2, whose random weights get BatchNorm statistics from one batch of noise so that",
        "its logits do not vanish; near-tied random logits make its int8 agreement a pessimistic figure).",
        "`file_bytes`: the .keras file, the .tflite flatbuffer, or the TVM shared library.",
        "Caveat: the 2-core machine is shared with other jobs; absolute medians varied up to 2x between runs on the",
        "same day (e.g. LiteRT float32 MobileNetV2 invoke 367 us in one run, 701 us in another). Compare ratios",
        "within one run rather than absolute numbers across runs.",
        "",
        markdown_table(shown, columns),
        "",
        "## Is int8 faster than float32 here?",
        *int8_verdicts(rows),
        "",
        *tuning_section(rows),
        "",
        "## Not measured",
        f"- **hcnn**: the H-CNN backbone the search chose for the phone in tools/bench/table2.py ({args.hcnn}); "
        "agreement on 200 D5 test images.",
        "- **Tuning for the ARM targets** (rpi4, android-arm64, armv7): needs an RPC runner on the device.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,hcnn,mobilenetv2", help=f"comma list of {sorted(SUBJECTS)}")
    parser.add_argument("--hcnn", type=Path, default=HCNN_DEFAULT, help="the compiled H-CNN's model.keras")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-tune", dest="tune", action="store_false", help="skip the MetaSchedule-tuned TVM rows")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            subject = hcnn_subject(args.hcnn) if name == "hcnn" else SUBJECTS[name]()
            print(f"measuring {subject.name} ...", file=sys.stderr)
            rows += measure(subject, args.repeats, args.warmup, args.threads, Path(tmp), args.tune)
    info = machine()
    tuning = {name: {k: v for k, v in vars(b).items() if k != "work_dir"} for name, b in TUNE_BUDGETS.items()}
    pending = [f"tvm-tuned: {why}" for why in TUNING_SKIPPED] if args.tune else []
    data = {"method": {"batch": 1, "warmup": args.warmup, "repeats": args.repeats, "statistic": "median",
                       "litert_threads": args.threads, "reference": "litert-invoke-float32",
                       "tvm_tuning": tuning if args.tune else None},
            "pending": pending, "rows": rows}
    json_path, md_path = write_results("engines", data, markdown(rows, args, info))
    print(markdown(rows, args, info))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
