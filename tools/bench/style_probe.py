"""Does rendering the original images in the field's style (`retrain.field.style_share`) let one retrain learn the
field, and what does it cost on the clean test split? Offline, on field_shift's class-hue colour folder.

How the data was made and measured: `HOW` below (also in the report).

    .venv/bin/python tools/bench/style_probe.py [--compiled-hues build/field_shift/hues/compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, machine, markdown_table, write_results  # noqa: E402
from enhance_probe import crowd_labels  # noqa: E402
from field_shift import ALPHA, stream_and_held  # noqa: E402

from hgen.compiler.data import load_dataset  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import predict_logits  # noqa: E402
from hgen.hub.config import FieldConfig, RetrainConfig  # noqa: E402
from hgen.hub.retrain.data import HumanSet  # noqa: E402
from hgen.hub.retrain.enhance import enhance  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402

HOW = """The deployed model is field_shift's class-hue compile (lenet5 on the clean folder). Per field (low light,
noise) and seed, 1,000 field frames are labelled by a SIMULATED crowd (m=3, accuracy 0.9, errors growing with
1 - confidence) and 20 % of them held out as the hub does, leaving 800 for training:

- active: the 600 least confident frames of the stream plus 200 random ones (what a gate under tau with audits asks
  about, in one go);
- passive: 800 random frames.

The hub's `enhance` (the H-CNN kind's retrain, with field_shift's hub settings) then runs once per style share;
model-only accuracy on field_shift's held-out 2,000 field images and on the clean test split. One retrain per cell
(training is not bit-reproducible on multi-threaded CPU TF; a cell's standard error is ~1 point)."""
FIELDS, SEEDS, SHARES = ("lowlight", "noise"), (0, 1), (0.0, 0.5, 1.0)
LABELS, UNSURE = 800, 600  # trained on (of 1,000 with 20 % held out); the active pick's least confident part
HUB = {"original_samples": 20000, "human_repeat": 10, "epochs": 2, "alpha": ALPHA}  # field_shift's hub settings


def picks(confidence: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = np.argsort(confidence, kind="stable")
    active = np.concatenate([order[:UNSURE], rng.choice(order[UNSURE:], LABELS - UNSURE, replace=False)])
    return {"active": np.sort(active), "passive": np.sort(rng.choice(len(confidence), LABELS, replace=False))}


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predict_logits(model, x).argmax(axis=1) == y))


def one_field(field: str, root: Path, compiled: Path) -> list[dict[str, Any]]:
    keras_path = compiled / "model.keras"
    temperature = json.loads((compiled / "plan.json").read_text())["temperature"]
    clean = load_dataset(f"folder:{root}?size=32", seed=0)
    stream, held = stream_and_held(load_dataset(f"folder:{root}:{field}?size=32", seed=0))
    deployed = load_model_file(keras_path)
    confidence = softmax(predict_logits(deployed, stream.x), temperature).max(axis=1)
    rows = [{"field": field, "seed": "-", "labels": "deployed", "style_share": "-",
             "field_accuracy": accuracy(deployed, held.x, held.y),
             "clean_test_accuracy": accuracy(deployed, clean.test.x, clean.test.y)}]
    for seed in SEEDS:
        for name, idx in picks(confidence, seed).items():
            y = crowd_labels(stream.y[idx], confidence[idx])
            x8 = (np.clip(stream.x[idx] * 255, 0, 255).astype(np.uint8) / 255.0).astype(np.float32)
            human = HumanSet(x8, y, tuple(f"s{i}" for i in idx))
            for share in SHARES:
                config = RetrainConfig(**HUB, seed=seed, field=FieldConfig(style_share=share))
                new = enhance(keras_path, clean, human, config)
                style = new.style or {}
                rows.append({"field": field, "seed": seed, "labels": name, "style_share": share,
                             "label_accuracy": float(np.mean(y == stream.y[idx])),
                             "field_accuracy": accuracy(new.model, held.x, held.y),
                             "clean_test_accuracy": accuracy(new.model, clean.test.x, clean.test.y),
                             "added_noise": style.get("added_noise", 0.0),
                             "field_noise": style.get("field_noise", ""), "train_seconds": round(new.seconds, 1)})
                print(rows[-1], flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (field, labels, share), and active minus passive per (field, share)."""
    out = []
    for field in FIELDS:
        for share in SHARES:
            mean = {}
            for name in ("active", "passive"):
                cells = [r for r in rows if (r["field"], r["labels"], r["style_share"]) == (field, name, share)]
                mean[name] = (float(np.mean([r["field_accuracy"] for r in cells])),
                              float(np.mean([r["clean_test_accuracy"] for r in cells])))
            out.append({"field": field, "style_share": share, "active_field": mean["active"][0],
                        "passive_field": mean["passive"][0],
                        "active_minus_passive_points": round((mean["active"][0] - mean["passive"][0]) * 100, 2),
                        "active_clean_test": mean["active"][1], "passive_clean_test": mean["passive"][1]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiled-hues", type=Path, default=Path("build/field_shift/hues/compile"))
    parser.add_argument("--colour-root", type=Path, default=Path("build/field_shift/colour-hues"))
    parser.add_argument("--render", action="store_true", help="only re-write the MD from the JSON")
    args = parser.parse_args()
    for need in () if args.render else (args.compiled_hues / "model.keras", args.colour_root):
        if not need.exists():
            raise SystemExit(f"{need} is missing: run tools/bench/field_shift.py once (it writes both)")
    if args.render:
        data = json.loads((RESULTS / "style_probe.json").read_text())
    else:
        start = time.perf_counter()
        rows = [row for field in FIELDS for row in one_field(field, args.colour_root.resolve(), args.compiled_hues)]
        data = {"rows": rows, "summary": summary(rows), "settings": HUB, "machine": machine(),
                "annotators": "SIMULATED, m=3, accuracy 0.9", "wall_seconds": round(time.perf_counter() - start, 1)}
    rows, means, m = data["rows"], data["summary"], data["machine"]
    markdown = "\n".join([
        "# The field's style on the original images: one retrain on the class-hue folder — annotators SIMULATED",
        "", f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; one retrain per cell, seeds {SEEDS}; wall "
        f"{data['wall_seconds']:.0f} s.", "", HOW, "",
        "Mean over the seeds (field: held-out field images; clean test: the clean folder's test split):", "",
        markdown_table(means, ["field", "style_share", "active_field", "passive_field",
                               "active_minus_passive_points", "active_clean_test", "passive_clean_test"]), "",
        "Every cell:", "",
        markdown_table(rows, ["field", "seed", "labels", "style_share", "label_accuracy", "field_accuracy",
                              "clean_test_accuracy", "added_noise", "field_noise", "train_seconds"]), ""])
    json_path, md_path = write_results("style_probe", data, markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
