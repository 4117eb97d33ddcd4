"""Does enhancement training from a few hundred human labels help the compiled H-CNN on hard samples?

The closed-loop benchmark's acceptance check refuses most retrains; this isolates why. The D5 H-CNN is compiled
with the demo's search settings; the first 8,000 D5 test images go through it and the first 600 it gates (c < tau)
get labels twice: the truth, and the majority of a SIMULATED crowd (m=3, accuracy 0.9, errors growing with
1 - confidence, as in the hub's tests). Both are split like the hub splits them (fixed hash, 20% held out), the
images are 8-bit as a device sends them, and the hub's `enhance` runs with the closed-loop settings. Accuracy on the
held-out part is measured against the truth. One run (training is not bit-reproducible on multi-threaded CPU TF).

    .venv/bin/python tools/bench/enhance_probe.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, markdown_table, write_results  # noqa: E402

from hgen.compiler.data import load_dataset  # noqa: E402
from hgen.compiler.demo import compile_stage, demo_config, with_preset  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import predict_logits  # noqa: E402
from hgen.hub.config import RetrainConfig  # noqa: E402
from hgen.hub.crowd import SimulatedCrowd  # noqa: E402
from hgen.hub.retrain.data import HumanSet, split_holdout  # noqa: E402
from hgen.hub.retrain.enhance import enhance  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402
from hgen.runtime.hdnn import needs_human  # noqa: E402

DATASET, GATED, SETTINGS = "fashion-mnist:lowres", 600, {"original_samples": 20000, "human_repeat": 10, "epochs": 2}


def crowd_labels(truth: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    crowd = SimulatedCrowd.uniform(3, 0.9, 10, seed=7)
    votes = [[a.answer(int(t), 1.0 - float(c)).label for a in crowd.annotators] for t, c in zip(truth, confidence)]
    return np.array([np.bincount(v, minlength=10).argmax() for v in votes])


def probe(work: Path) -> dict[str, Any]:
    settings = with_preset(demo_config(dataset=DATASET, device="phone", engines=("litert",), out=str(work)),
                           "fashion-mnist")
    compiled = compile_stage(settings, DATASET, work, log=lambda message: None)
    chosen = json.loads((compiled.out / "plan.json").read_text())
    data = load_dataset(DATASET, seed=settings.seed)
    keras_path = compiled.out / "model.keras"
    model = load_model_file(keras_path)
    probs = softmax(predict_logits(model, data.test.x[:8000]), chosen["temperature"])
    gated = np.flatnonzero(needs_human(probs.max(axis=1), chosen["tau"]))[:GATED]
    x = (np.clip(data.test.x[gated] * 255, 0, 255).astype(np.uint8) / 255.0).astype(np.float32)
    truth, confidence = data.test.y[gated], probs[gated].max(axis=1)
    labels = {"truth": truth, "simulated crowd": crowd_labels(truth, confidence)}
    rows = []
    for name, y in labels.items():
        train, held = split_holdout(HumanSet(x, y, tuple(f"s{i}" for i in gated)), 0.2, 0)
        held_truth = data.test.y[[int(s[1:]) for s in held.sample_ids]]
        new = enhance(keras_path, data, train, RetrainConfig(**SETTINGS)).model
        accuracy = lambda m: float(np.mean(predict_logits(m, held.x).argmax(axis=1) == held_truth))  # noqa: E731
        rows.append({"labels": name, "label_accuracy": float(np.mean(y == truth)), "train": len(train),
                     "held_out": len(held), "held_out_accuracy_deployed": accuracy(model),
                     "held_out_accuracy_retrained": accuracy(new),
                     "test_accuracy_deployed": float(np.mean(predict_logits(model, data.test.x[8000:]).argmax(1)
                                                             == data.test.y[8000:])),
                     "test_accuracy_retrained": float(np.mean(predict_logits(new, data.test.x[8000:]).argmax(1)
                                                              == data.test.y[8000:]))})
    return {"dataset": DATASET, "tau": chosen["tau"], "plan": compiled.summary["plan"], "settings": SETTINGS,
            "annotators": "simulated, m=3, accuracy 0.9", "rows": rows}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hgen-enhance-probe-") as tmp:
        data = probe(Path(tmp))
    m = machine()
    columns = ["labels", "label_accuracy", "train", "held_out", "held_out_accuracy_deployed",
               "held_out_accuracy_retrained", "test_accuracy_deployed", "test_accuracy_retrained"]
    markdown = "\n".join([
        "# Enhancement from human labels on hard D5 samples (annotators SIMULATED)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU. One run. The demo's compiled H-CNN (phone, plan "
        f"{data['plan']}, tau {data['tau']:.3f}); the first {GATED} images it gates among the first 8,000 D5 test "
        f"images, labelled by the truth or by a simulated crowd, 20% held out by the hub's hash; the hub's `enhance` "
        f"with {SETTINGS}. held_out_*: accuracy on the held-out gated images against the truth; test_*: the last "
        "2,000 D5 test images.", "", markdown_table(data["rows"], columns), ""])
    json_path, md_path = write_results("enhance_probe", data, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
