"""own_data.py's int8 section (issue 14): train mobilenet_v2 on a colour folder, lower it to LiteRT float / int8
and TVM, and measure int8's top-1 agreement with float on the test split, by the float model's top-2 margin."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

def agreement(engine: Any, x: np.ndarray, reference: np.ndarray) -> float:
    predictions = np.concatenate([engine.run(x[i:i + 1]).argmax(1) for i in range(len(x))])
    return float(np.mean(predictions == reference))


MARGINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, float("inf")))


def by_margin(engine: Any, x: np.ndarray, float_logits: np.ndarray) -> dict[str, dict[str, float]]:
    """Agreement among test images grouped by the float model's top-1 minus top-2 logit: near-ties are where a
    weak model's int8 answer flips."""
    top2 = np.sort(float_logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    same = np.concatenate([engine.run(x[i:i + 1]).argmax(1) for i in range(len(x))]) == float_logits.argmax(1)
    groups = {}
    for low, high in MARGINS:
        pick = (margin >= low) & (margin < high)
        groups[f"[{low:g}, {high:g})"] = {"images": int(pick.sum()),
                                          "agreement": round(float(same[pick].mean()), 4) if pick.any() else None}
    return groups


def per_channel_count(content: bytes) -> str:
    """How many int8 weight tensors carry one scale per output channel (the converter's default)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    multi = single = 0
    for detail in interpreter.get_tensor_details():
        scales = detail["quantization_parameters"]["scales"]
        if detail["dtype"] == np.int8 and len(detail["shape"]) == 4 and len(scales) >= 1:
            if len(scales) > 1:
                multi += 1
            else:
                single += 1
    return f"{multi} rank-4 int8 tensors per-channel, {single} per-tensor"


def int8_agreement(spec: str, args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Train mobilenet_v2 (0.35, 96x96x3) on the folder data, lower to LiteRT float/int8 and TVM, compare top-1."""
    from hgen.compiler.data import load_dataset
    from hgen.compiler.lowering import lower_tflite, lower_tvm
    from hgen.compiler.lowering.tflite import representative_sample
    from hgen.compiler.models import build_model
    from hgen.compiler.train import TrainConfig, train_classifier
    from hgen.runtime.engines import open_engine

    data = load_dataset(spec, seed=0)
    log(f"int8: {len(data.train)} train / {len(data.test)} test, input {data.input_shape}")
    # The compiler's own training (compile._train_base): `epochs`, then precise BatchNorm statistics over the
    # training split and `bn_freeze_epochs` more with them frozen (hgen.compiler.train.train_classifier says why).
    recipe = TrainConfig(epochs=args.int8_epochs, batch_size=32, seed=0, freeze_bn_epochs=args.bn_freeze_epochs,
                         verbose=2)  # one line per epoch (loss, accuracy, seconds) on stdout
    epochs = recipe.epochs + recipe.freeze_bn_epochs
    if args.int8_model:  # the model an earlier run trained with these settings (re-measure the lowering only)
        from hgen.compiler.models import load_model_file

        model, seconds = load_model_file(args.int8_model), float("nan")
    else:
        model = build_model("mobilenet_v2", data.input_shape, data.num_classes, options)
        seconds = train_classifier(model, data.train, config=recipe)
    x, y = np.asarray(data.test.x), data.test.y  # the data set stays uint8 until read (hgen.compiler.data.lazy)
    keras_top1 = model.predict(x, batch_size=100, verbose=0).argmax(1)
    accuracy = float(np.mean(keras_top1 == y))
    log(f"int8: trained {epochs} epochs in {seconds:.0f} s, Keras test accuracy {accuracy:.3f}")
    work = Path(args.out) / "int8"
    work.mkdir(parents=True, exist_ok=True)
    if not args.int8_model:
        model.save(work / "mobilenet_v2.keras")
    calibration = representative_sample(data.train.x, data.train.y, args.representative, seed=0)
    result: dict[str, Any] = {"model": "mobilenet_v2 alpha 0.35, 96x96x3, random init", "epochs": epochs,
                              "training": f"hgen.compiler.train.train_classifier: Adam {recipe.learning_rate:g}, batch "
                                          f"{recipe.batch_size}, {recipe.epochs} epochs, precise BatchNorm statistics "
                                          f"(settle_batch_norm, up to 4,096 training images), {recipe.freeze_bn_epochs} "
                                          "epochs with them frozen at 0.3x the learning rate",
                              "train_seconds": None if args.int8_model else round(seconds, 1),
                              "keras_test_accuracy": accuracy,
                              "test_images": len(x), "representative_samples": len(calibration),
                              "representative_source": "the training split, stratified: the same number of images "
                                                       "of every class, picked at random (hgen.compiler.lowering."
                                                       "tflite.representative_sample, seed 0)",
                              "quantisation": "full int8 (TFLITE_BUILTINS_INT8, int8 in/out), converter default: "
                                              "per-channel weights for Conv2D/DepthwiseConv2D, per-tensor "
                                              "activations"}
    float_model = lower_tflite(model, quantize="float")
    int8_model = lower_tflite(model, quantize="int8", representative_data=calibration)
    result["per_channel_weight_tensors"] = per_channel_count(int8_model.content)
    engines = {}
    for precision, tflite in (("float32", float_model), ("int8", int8_model)):
        path = tflite.save(work / f"mobilenet_v2.{precision}.tflite")
        engines[f"litert-{precision}"] = (open_engine("litert", path), tflite)
    float_logits = np.concatenate([engines["litert-float32"][0].run(x[i:i + 1]) for i in range(len(x))])
    float_top1 = float_logits.argmax(1)
    result["litert_float_vs_keras"] = float(np.mean(float_top1 == keras_top1))
    result["float_distinct_predictions"] = len(set(float_top1.tolist()))
    result["litert_int8_vs_float"] = agreement(engines["litert-int8"][0], x, float_top1)
    result["litert_int8_accuracy"] = agreement(engines["litert-int8"][0], x, y)
    result["litert_int8_vs_float_by_margin"] = by_margin(engines["litert-int8"][0], x, float_logits)
    log(f"int8: LiteRT int8 vs float top-1 agreement {result['litert_int8_vs_float']:.4f}")
    try:
        tflite = int8_model
        library = lower_tvm(tflite.content, "x86_64", work / "mobilenet_v2.int8.tvm")
        config = {"input_shape": list(tflite.input_shape), "output_shape": list(tflite.output_shape),
                  "precision": "int8", "input_quantization": vars(tflite.input_quant),
                  "output_quantization": vars(tflite.output_quant)}
        tvm = open_engine("tvm", library.path, config)
        result["tvm_int8_vs_float"] = agreement(tvm, x, float_top1)
        result["tvm_int8_vs_float_by_margin"] = by_margin(tvm, x, float_logits)
        result["tvm_int8_vs_litert_int8"] = agreement(
            tvm, x, np.concatenate([engines["litert-int8"][0].run(x[i:i + 1]).argmax(1) for i in range(len(x))]))
        result["tvm_path"] = "TVM relax from the LiteRT int8 flatbuffer (lower_tvm), target x86_64, untuned"
        log(f"int8: TVM int8 vs float top-1 agreement {result['tvm_int8_vs_float']:.4f}")
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        result["tvm_error"] = f"{type(exc).__name__}: {exc}"
        log(f"int8: TVM failed: {result['tvm_error']}")
    return result


