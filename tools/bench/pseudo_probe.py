"""Issue 18's open question, offline: do pseudo-labels from confident field frames make the frames people label
(the uncertain ones) teach more than randomly chosen ones?

One retrain per cell, from the deployed model (the field-shift benchmark's D3 H-CNN: lenet5 compiled on clean
FashionMNIST with the demo's search settings, phone profile), with the field-shift benchmark's hub settings (20,000
original images with the teacher's logits, each human label x10, alpha 0.2, 2 epochs). The field is FashionMNIST
under a condition the model never saw; its stream is the field's validation images then its test images except the
last 2,000, which are the held-out measurement (never trained on), as in tools/bench/field_shift.py.

- active: the first `--labels` stream frames the deployed gate sends (confidence < tau, plus 5 % of the confident
  ones: the agent's audit draw), labelled by a SIMULATED crowd (m=3, accuracy 0.9, errors growing with 1 -
  confidence, as tools/bench/enhance_probe.py).
- passive: the same number of randomly chosen stream frames, labelled the same way.
- + pseudo: `--pseudo` randomly chosen confident stream frames (confidence >= tau, not labelled by people), the
  deployed model's argmax as the hard label and its logits as the soft target, each once.

Differences from the loop (say so when reading): one retrain with all labels at once (the loop retrains every 200
and re-gates with each new model); no acceptance check, no autoencoder filter, no labour limit; model-only accuracy
(argmax), so no temperature or tau is re-fitted. One training seed per cell (CPU TF is not bit-reproducible): the held-out
standard error is ~1 point.

    .venv/bin/python tools/bench/pseudo_probe.py [--field fashion-mnist:noise] [--labels 1000] [--pseudo 3000]
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
from benchlib import machine, markdown_table, write_results  # noqa: E402
from enhance_probe import crowd_labels  # noqa: E402
from field_shift import ALPHA, AUDIT, HELD_OUT, stream_and_held  # noqa: E402
from field_shift_scenarios import SCENARIOS, compile_settings  # noqa: E402

from hgen.compiler.data import Dataset, Split, load_dataset  # noqa: E402
from hgen.compiler.demo import compile_stage  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import distill, predict_logits  # noqa: E402
from hgen.hub.config import RetrainConfig  # noqa: E402
from hgen.hub.retrain.data import HumanSet  # noqa: E402
from hgen.hub.retrain.enhance import distill_config, training_set  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402

SETTINGS = {"original_samples": 20000, "human_repeat": 10, "epochs": 2, "alpha": ALPHA}  # field_shift's hub


def deployed_model(work: Path) -> tuple[Path, float, float, Dataset]:
    """The clean D3 H-CNN as the field-shift benchmark compiles it (reused when WORK/compile holds one)."""
    settings = compile_settings(SCENARIOS["D3 -> D4 (noise)"], "fashion-mnist", work)
    out = work / "compile"
    if not (out / "plan.json").is_file():
        compile_stage(settings, "fashion-mnist", work, log=lambda message: print(message, flush=True))
    chosen = json.loads((out / "plan.json").read_text())
    return out / "model.keras", float(chosen["tau"]), float(chosen["temperature"]), \
        load_dataset("fashion-mnist", seed=settings.seed, limit=settings.limit)


def retrain(keras_path: Path, data: Dataset, human: HumanSet, pseudo: Split | None, seed: int) -> Any:
    """The hub's enhancement set (`training_set`), plus pseudo-labelled frames with the teacher's own logits."""
    config = RetrainConfig(**SETTINGS, seed=seed)
    teacher, student = load_model_file(keras_path), load_model_file(keras_path)
    split, logits, _ = training_set(teacher, data, human, config)
    if pseudo is not None and len(pseudo):
        own = predict_logits(teacher, pseudo.x)
        split = Split(np.concatenate([split.x, pseudo.x]), np.concatenate([split.y, own.argmax(axis=1)]))
        logits = np.concatenate([logits, own])
    distill(student, logits, split, distill_config(config))
    return student


def probe(field: str, labels: int, pseudo_count: int, work: Path, seed: int) -> dict[str, Any]:
    keras_path, tau, temperature, clean = deployed_model(work)
    stream, held = stream_and_held(load_dataset(field, seed=0))
    model = load_model_file(keras_path)
    confidence = softmax(predict_logits(model, stream.x), temperature).max(axis=1)
    rng = np.random.default_rng(seed)
    gated = (confidence < tau) | ((confidence >= tau) & (rng.random(len(stream)) < AUDIT))
    picks = {"active": np.flatnonzero(gated)[:labels],
             "passive": np.sort(rng.choice(len(stream), labels, replace=False))}
    confident = np.flatnonzero(confidence >= tau)
    pseudo_index = rng.choice(confident, min(pseudo_count, len(confident)), replace=False)
    pseudo = Split(stream.x[pseudo_index], stream.y[pseudo_index])
    accuracy = lambda m: float(np.mean(predict_logits(m, held.x).argmax(axis=1) == held.y))  # noqa: E731
    rows = [{"cell": "deployed (no retrain)", "human_labels": 0, "pseudo_labels": 0, "label_accuracy": None,
             "held_out_model_only": accuracy(model), "seconds": 0.0}]
    cells = [("pseudo only", None, pseudo)] + [(f"{name}{' + pseudo' if p is not None else ''}", name, p)
                                                for p in (None, pseudo) for name in picks]
    for cell, pick, extra in cells:
        start = time.perf_counter()
        index = picks[pick] if pick else np.zeros(0, np.int64)
        y = crowd_labels(stream.y[index], confidence[index]) if len(index) else np.zeros(0, np.int64)
        human = HumanSet(stream.x[index], y, tuple(f"s{i}" for i in index))
        student = retrain(keras_path, clean, human, extra, seed)
        rows.append({"cell": cell, "human_labels": len(index), "pseudo_labels": 0 if extra is None else len(extra),
                     "label_accuracy": float(np.mean(y == stream.y[index])) if len(index) else None,
                     "held_out_model_only": accuracy(student), "seconds": round(time.perf_counter() - start, 1)})
        print(f"{cell}: {rows[-1]['held_out_model_only']:.4f}", flush=True)
    pseudo_accuracy = float(np.mean(predict_logits(model, pseudo.x).argmax(axis=1) == pseudo.y))
    return {"field": field, "tau": tau, "temperature": temperature, "stream": len(stream), "held_out": HELD_OUT,
            "gated_share": float(np.mean(confidence < tau)), "pseudo_label_accuracy": pseudo_accuracy,
            "settings": SETTINGS | {"labels": labels, "pseudo": pseudo_count, "seed": seed, "audit": AUDIT},
            "annotators": "SIMULATED, m=3, accuracy 0.9", "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", default="fashion-mnist:noise")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--pseudo", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("build/pseudo_probe"))
    parser.add_argument("--out", default="pseudo_probe")
    args = parser.parse_args()
    start = time.perf_counter()
    result = probe(args.field, args.labels, args.pseudo, args.work, args.seed)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    m = machine()
    header = (f"# Pseudo-labels probe (issue 18), field `{result['field']}` — annotators SIMULATED\n\n"
              f"Machine: {m['cpu']}, {m.get('cores', 2)} cores; one run, one training seed per cell (held-out "
              f"standard error ~1 point); {result['wall_seconds']:.0f} s. How it is made: see the docstring of "
              f"tools/bench/pseudo_probe.py. Deployed tau {result['tau']:.3f}; share of stream frames under tau "
              f"{result['gated_share']:.3f}; the deployed model's accuracy on the pseudo-labelled frames "
              f"{result['pseudo_label_accuracy']:.3f}. Settings: {result['settings']}.\n\n")
    columns = ["cell", "human_labels", "pseudo_labels", "label_accuracy", "held_out_model_only", "seconds"]
    write_results(args.out, result, header + markdown_table(result["rows"], columns) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
