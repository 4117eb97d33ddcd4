"""label_value_probe's second round: once a model has learned the field from random labels, do the frames it
doubts teach more than random ones?

The one-retrain cells compare picks by the deployed model, which a shifted field makes confidently wrong. The loop
re-gates with each retrained model, so from round 1 on its picks are a field-adapted model's doubts. This part
measures that round on its own: a first retrain on FIRST random stream frames, then a second one, from the first's
model and with all labels so far (as the hub trains on its knowledge base), after SECOND more frames: the ones the
first model is least sure of, or random ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from style_probe import accuracy

from hgen.compiler.data import Dataset, Split
from hgen.compiler.train import predict_logits
from hgen.hub.retrain.data import HumanSet
from hgen.runtime.calibration import softmax

FIRST, SECOND = 400, 400
HOW = (f"A second round (per seed): a retrain on {FIRST} random stream frames (+ style), then a second retrain from "
       f"its model on those labels plus {SECOND} more: the {SECOND} frames the first model is least sure of, or "
       f"{SECOND} random ones; SIMULATED crowd as above. `first_model_right`: the first model right on the "
       f"{SECOND} added frames; accuracies on the held-out field images.")
SECONDS = ("doubted by the first model", "random")
Retrain = Callable[..., tuple[Any, dict[str, float]]]
Crowd = Callable[[np.ndarray, np.ndarray], np.ndarray]


def second_round(field: str, keras_path: Path, confidence: np.ndarray, temperature: float, clean: Dataset,
                 stream: Split, held: Split, seeds: tuple[int, ...], retrain: Retrain,
                 crowd: Crowd) -> list[dict[str, Any]]:
    """One row per seed and second pick. `confidence`: the deployed model's on the stream (the crowd errs more on
    doubted frames); `retrain` and `crowd` are label_value_probe's (the hub's retrain, the SIMULATED crowd)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            rng = np.random.default_rng(seed + 900)
            first = rng.choice(len(stream.y), FIRST, replace=False)
            y_first = crowd(stream.y[first], confidence[first])
            model, _ = retrain(keras_path, clean, human_set(stream, first, y_first), 0.5, seed, True)
            first_path = Path(tmp) / f"first_{seed}.keras"
            model.save(first_path)
            first_accuracy, logits = accuracy(model, held.x, held.y), predict_logits(model, stream.x)
            doubt = softmax(logits, temperature).max(axis=1)
            rest = np.setdiff1d(np.arange(len(stream.y)), first)
            picks = {SECONDS[0]: rest[np.argsort(doubt[rest], kind="stable")[:SECOND]],
                     SECONDS[1]: rng.choice(rest, SECOND, replace=False)}
            for name, second in picks.items():
                idx = np.concatenate([first, second])
                y = np.concatenate([y_first, crowd(stream.y[second], doubt[second])])
                final, _ = retrain(first_path, clean, human_set(stream, idx, y), 0.5, seed, True)
                rows.append({"field": field, "seed": seed, "second": name, "first_accuracy": first_accuracy,
                             "field_accuracy": accuracy(final, held.x, held.y),
                             "first_model_right": float(np.mean(logits[second].argmax(axis=1) == stream.y[second]))})
                print(rows[-1], flush=True)
    return rows


def human_set(stream: Split, idx: np.ndarray, y: np.ndarray) -> HumanSet:
    """The stream frames `idx` (repeats allowed) with the labels `y`, as the hub's human set."""
    return HumanSet(stream.x[idx], y, tuple(f"s{i}" for i in idx))


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per field and second pick: means over the seeds."""
    out = []
    for field in dict.fromkeys(r["field"] for r in rows):
        for name in SECONDS:
            of = [r for r in rows if (r["field"], r["second"]) == (field, name)]
            if of:
                out.append({"field": field, "second": name} | {
                    key: float(np.mean([r[key] for r in of]))
                    for key in ("first_accuracy", "first_model_right", "field_accuracy")})
    return out
