"""Compression operators on the trained LeNet-5, D5 (low-res FashionMNIST) -> results/ops_table.json and .md.

Each operator alone (conv operators on both convs, fc operators on the fully connected stack fc1/fc2/logits;
`gap` on the classifier, which removes fc1/fc2) and the paper's combinations of Tables 3 and 5. For every row:
stored params, MACs, S (Eq. 11, 32-bit), E (Eq. 12) of the rewritten model, test accuracy right after the
weight-preserving rewrite, test accuracy after a 1-epoch distillation fine-tune (soft targets from the original,
T = 4, alpha = 0.7), and the fine-tune's wall time. One run, one seed.
Run: `.venv/bin/python tools/bench/ops_table.py [--epochs 4] [--seed 0]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchlib import machine, markdown_table, write_results

from hgen.compiler.data import load_dataset
from hgen.compiler.metrics import energy_mj, model_costs, storage_mb
from hgen.compiler.models import build_model
from hgen.compiler.ops import OPERATORS, Plan, apply_plan, every_layer
from hgen.compiler.train import DistillConfig, TrainConfig, accuracy, distill, predict_logits, train_classifier

DATASET = "fashion-mnist:lowres"  # D5
CONVS = ["conv1", "conv2"]
FCS = ["fc1", "fc2", "logits"]
CALIBRATION = 512


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def single_rows(model: Any) -> list[tuple[str, Plan]]:
    """Each operator alone, on every layer of its kind that it accepts (gap: on the classifier)."""
    rows = []
    for name, operator in OPERATORS.items():
        if operator.paper_id == "-":  # identity and hgen's own operators: this table is the paper's Table 1
            continue
        if "Conv2D" in operator.layer_types:
            rows.append((f"{operator.paper_id} {name}", every_layer(model, name, only=CONVS)))
        elif name == "gap":
            rows.append((f"{operator.paper_id} {name}", Plan.of({"logits": "gap"})))
        else:
            rows.append((f"{operator.paper_id} {name}", every_layer(model, name, only=FCS)))
    return sorted(rows)


def combination_rows(model: Any) -> list[tuple[str, Plan]]:
    """Tables 3/5: two conv operators split over conv1/conv2; a conv + an fc operator on all convs + the fc part."""
    fc_svd = every_layer(model, "svd_dense", only=FCS)
    return [
        ("o_c1+o_c2", Plan.of({"conv1": "sparse_decompose", "conv2": "depthwise_separable"})),
        ("o_c4+o_c5", Plan.of({"conv1": "fire", "conv2": "mlpconv"})),
        ("o_c4+o_f1", every_layer(model, "fire", only=CONVS).merge(Plan.of({"logits": "gap"}))),
        ("o_c5+o_f2", every_layer(model, "mlpconv", only=CONVS).merge(fc_svd)),
        ("o_c2+o_f1", every_layer(model, "depthwise_separable", only=CONVS).merge(Plan.of({"logits": "gap"}))),
    ]


def measure(label: str, plan: Plan, model: Any, data: Any, teacher_logits: Any, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    new = apply_plan(model, plan, data.train.x[:CALIBRATION * 4], max_calibration=CALIBRATION, seed=seed)
    rewrite_seconds = time.perf_counter() - start
    costs = model_costs(new)
    row = {"name": label, "plan": plan.to_dict(), "layers": plan.describe(), "params": costs.weights,
           "macs": costs.macs, "activations": costs.activations, "storage_mb": storage_mb(costs),
           "energy_mj": energy_mj(costs), "rewrite_seconds": rewrite_seconds,
           "accuracy_rewrite": accuracy(new, data.test)}
    row["finetune_seconds"] = distill(new, teacher_logits, data.train, DistillConfig(epochs=1, seed=seed))
    row["accuracy_finetuned"] = accuracy(new, data.test)
    log(f"{label:28s} params {row['params']:6d}  acc {row['accuracy_rewrite']:.4f} -> "
        f"{row['accuracy_finetuned']:.4f}  ({row['finetune_seconds']:.1f} s)")
    return row


def markdown(result: dict[str, Any]) -> str:
    c, base = result["config"], result["baseline"]
    columns = ["name", "layers", "params", "macs", "storage_mb", "energy_mj", "accuracy_rewrite",
               "accuracy_finetuned", "finetune_seconds", "rewrite_seconds"]
    return "\n".join([
        "# Compression operators on LeNet-5, D5 (low-res FashionMNIST)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, no GPU. One run, seed {c['seed']}. "
        f"LeNet-5 trained {c['epochs']} epochs on the {c['train']} training images ({base['train_seconds']:.0f} s); "
        f"accuracies on the {c['test']} test images. Rewrites initialise from the trained weights (calibration: "
        f"{c['calibration']} training images); fine-tune = 1 epoch of distillation (T = {c['temperature']}, alpha = "
        f"{c['alpha']}) on the training split, wall time of `fit` only. S: 32-bit weights and activations; masked "
        f"(sparse) layers count only their non-zeros (the .tflite file still stores them densely). Conv operators "
        f"go on conv1 and conv2 (sparse_random only on conv2: conv1 has one input channel); fc operators on "
        f"fc1, fc2, logits; gap on the classifier (replaces flatten-fc1-fc2-logits). Whole run: "
        f"{result['wall_seconds']:.0f} s.",
        "",
        f"Baseline: {base['params']} params, {base['macs']} MACs, S {base['storage_mb']:.4f} MB, "
        f"E {base['energy_mj']:.4f} mJ, accuracy {base['accuracy']:.4f}.",
        "",
        markdown_table(result["rows"], columns),
        "",
        result["verdict"],
    ])


def verdict(rows: list[dict[str, Any]], baseline: float) -> str:
    bad = [r["name"] for r in rows if r["accuracy_finetuned"] < baseline - 0.05]
    worst = min(rows, key=lambda r: r["accuracy_rewrite"])
    text = (f"Largest drop right after the rewrite: {worst['name']} ({worst['accuracy_rewrite']:.4f}). ")
    if bad:
        text += ("More than 5 points below the baseline even after the fine-tune: " + ", ".join(bad) + ".")
    else:
        text += "After one epoch of distillation every row is within 5 points of the baseline."
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_dataset(DATASET, seed=args.seed)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    train_seconds = train_classifier(model, data.train, config=TrainConfig(epochs=args.epochs, seed=args.seed))
    costs = model_costs(model)
    baseline = {"params": costs.weights, "macs": costs.macs, "storage_mb": storage_mb(costs),
                "energy_mj": energy_mj(costs), "accuracy": accuracy(model, data.test), "train_seconds": train_seconds}
    log(f"baseline accuracy {baseline['accuracy']:.4f} after {train_seconds:.0f} s of training")
    teacher = predict_logits(model, data.train.x)
    plans = single_rows(model) + combination_rows(model)
    rows = [measure(label, plan, model, data, teacher, args.seed) for label, plan in plans]
    defaults = DistillConfig()
    result = {"config": {"dataset": data.name, "epochs": args.epochs, "seed": args.seed, "train": len(data.train),
                         "test": len(data.test), "calibration": CALIBRATION, "temperature": defaults.temperature,
                         "alpha": defaults.alpha, "finetune_epochs": 1},
              "baseline": baseline, "rows": rows, "wall_seconds": time.perf_counter() - start, "machine": machine()}
    result["verdict"] = verdict(rows, baseline["accuracy"])
    json_path, md_path = write_results("ops_table", result, markdown(result))
    print(markdown(result))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
