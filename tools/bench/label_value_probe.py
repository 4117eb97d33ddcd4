"""What do the human labels themselves teach once the hub renders the originals in the field's style? Offline, one
retrain per cell from field_shift's clean FashionMNIST H-CNN, on D4 (noise) and D5 (low resolution).

Issue 18 asks the closed loop (labels of the frames the gate is unsure of) to end above passive labelling (random
field frames). On D4 both tie at the oracle's level. This probe separates the two things the labels do in a
retrain: they estimate the field's style (`hgen.hub.retrain.style`), and they are trained on (x `human_repeat`).

How the data was made and measured: `HOW` below (also in the report).

    .venv/bin/python tools/bench/label_value_probe.py [--work build/label_value_probe]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, machine, markdown_table, write_results  # noqa: E402
from diversity_picks import badge_pick, gradient_embedding, k_center_pick, typical_pick  # noqa: E402
from enhance_probe import crowd_labels  # noqa: E402
from field_shift import stream_and_held  # noqa: E402
from label_value_rounds import HOW as ROUNDS_HOW, human_set, means as round_means, second_round  # noqa: E402
from pseudo_probe import deployed_model  # noqa: E402
from style_probe import HUB, LABELS, UNSURE, accuracy, picks  # noqa: E402

from hgen.compiler.data import Dataset, Split, load_dataset  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import distill, predict_logits  # noqa: E402
from hgen.hub.config import FieldConfig, RetrainConfig  # noqa: E402
from hgen.hub.retrain.data import HumanSet  # noqa: E402
from hgen.hub.retrain.enhance import distill_config, training_set  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402

LONGER, SKEW_FLOOR = 6, 0.05  # the longer retrain's epochs; the class-skew pick's weight for an unskewed answer
FEATURES, PIXEL_COMPONENTS = "fc2", 50  # the coverage picks' spaces: lenet5's last hidden layer; pixels' PCA

HOW = f"""The deployed model is field_shift's D3 compile (lenet5 on clean FashionMNIST, the demo's search settings,
phone profile). Per field and seed, {LABELS} stream frames are labelled by a SIMULATED crowd (m=3, accuracy 0.9,
errors growing with 1 - confidence): what the hub trains on of {LABELS + LABELS // 4:,} labels (it holds 20 % out).

- active: the {UNSURE} least confident stream frames plus {LABELS - UNSURE} random ones (what a gate under tau with
  audits asks about, in one go);
- passive: {LABELS} random stream frames.

Cells, each one retrain with the hub's `training_set` and field_shift's hub settings ({HUB}):

- style only: the originals, half rendered in the style estimated from the active pick's images, and NO human
  label trained on (the human rows are dropped after the style is estimated);
- active / passive + style: the hub as it runs (`style_share` 0.5), with the pick's labels x{HUB['human_repeat']};
- active / passive, no style: `style_share` 0;
- active / passive, true labels: as "+ style" with the true classes instead of the crowd's answers (is it the
  crowd's errors on hard frames?);
- unsure {UNSURE} only / random {LABELS - UNSURE} only: the two parts of the active pick on their own (+ style);
- active, importance-weighted: the active pick with each label's weight 1 / the chance it was picked (1 for the
  unsure part, {LABELS - UNSURE} / the rest of the stream for the random part), as repeats summing to the hub's
  {HUB['human_repeat']} per label (+ style): the labels made to stand for the whole field, as passive's do;
- class-skew pick: {LABELS} stream frames drawn with weight max(1 - the class's training share / the share of
  frames given that answer, {SKEW_FLOOR}) (+ style): the bound says at least that share of the frames given an
  over-given answer is wrong if the field's classes occur as in training, so the pick aims at the confident errors
  a shifted field piles on a few answers, whatever the confidence (SMART's runtime class skew);
- active / passive, {LONGER} epochs: as "+ style" with {LONGER} epochs instead of the hub's {HUB['epochs']} (is
  it the retrain's length?);
- picks for coverage, {LABELS} frames each (+ style; `diversity_picks.py`): TypiClust on the pixels (their first
  {PIXEL_COMPONENTS} principal components: noise does not bend them as it bends the model's features) and on the
  deployed model's last hidden layer (`{FEATURES}`), BADGE on its gradient embedding, k-center greedy on `{FEATURES}`
  (do frames chosen to stand for the whole field teach more than random ones?).

The ceiling: the same retrain on the field's first 20,000 training images with their true labels (each once,
+ style), for 2, 6 and 12 epochs: what this lenet5 reaches on the field when labels are no limit, and how much of
the {UNSURE} least confident stream frames it gets right (are they readable at all?).

Model-only accuracy on field_shift's held-out 2,000 field images (never streamed) and on the clean test split. One
retrain per cell, differences from the loop: one retrain with all labels at once (the loop retrains every 200 and
re-gates with each new model), no acceptance check, no temperature or tau re-fit. On this machine a re-run on the
same compile (WORK/compile kept) repeats every cell exactly; a fresh compile is another deployed model (CPU training is
not bit-reproducible: its tau, temperature and errors differ), and the run before it, on its own compile, is set
beside this one below. The held-out set's standard error is ~1 point per cell, and the seeds' spread is in the
table."""
FIELDS, SEEDS = ("fashion-mnist:noise", "fashion-mnist:lowres"), (0, 1, 2)
CEILING_EPOCHS, CEILING_IMAGES = (2, 6, 12), 20000


@dataclass(frozen=True)
class Cell:
    """Which frames are labelled, the style share, whether the labels are trained on, and whose labels."""

    pick: str
    share: float = 0.5
    train_labels: bool = True
    truth: bool = False
    weighted: bool = False
    epochs: int | None = None  # None: the hub's


CELLS = {"style only": Cell("active", train_labels=False), "active + style": Cell("active"),
         "passive + style": Cell("passive"), "active, no style": Cell("active", share=0.0),
         "passive, no style": Cell("passive", share=0.0), "active, true labels": Cell("active", truth=True),
         "passive, true labels": Cell("passive", truth=True), f"unsure {UNSURE} only": Cell("unsure"),
         f"random {LABELS - UNSURE} only": Cell("random"),
         "active, importance-weighted": Cell("active", weighted=True), "class-skew pick": Cell("skew"),
         f"active, {LONGER} epochs": Cell("active", epochs=LONGER),
         f"passive, {LONGER} epochs": Cell("passive", epochs=LONGER),
         "TypiClust pick (pixels)": Cell("typical pixels"), f"TypiClust pick ({FEATURES})": Cell("typical features"),
         "BADGE pick": Cell("badge"), f"k-center pick ({FEATURES})": Cell("k-center")}


@dataclass(frozen=True)
class StreamView:
    """What the picks see of the stream: the deployed model's confidence, answers and spaces, the training prior."""

    confidence: np.ndarray
    answers: np.ndarray
    prior: np.ndarray
    pixels: np.ndarray
    features: np.ndarray
    embedding: np.ndarray


def stream_view(deployed: Any, stream: Split, temperature: float, clean: Dataset) -> StreamView:
    """The deployed model's outputs on the stream once, for every pick and seed."""
    from sklearn.decomposition import PCA
    from tensorflow import keras

    logits = predict_logits(deployed, stream.x)
    probability = softmax(logits, temperature)
    hidden = keras.Model(deployed.inputs, deployed.get_layer(FEATURES).output).predict(stream.x, verbose=0)
    flat = np.asarray(stream.x, dtype=np.float32).reshape(len(stream.x), -1)
    return StreamView(confidence=probability.max(axis=1), answers=logits.argmax(axis=1),
                      prior=np.bincount(clean.train.y, minlength=logits.shape[1]) / len(clean.train.y),
                      pixels=PCA(PIXEL_COMPONENTS, random_state=0).fit_transform(flat), features=hidden,
                      embedding=gradient_embedding(probability, hidden))


def retrain(keras_path: Path, clean: Dataset, human: HumanSet, share: float, seed: int,
            train_labels: bool, **hub: int) -> tuple[Any, dict[str, float]]:
    """The hub's enhancement set and loss (`hub` overrides field_shift's settings); without `train_labels` only
    the (styled) originals are trained on."""
    config = RetrainConfig(**(HUB | hub), seed=seed, field=FieldConfig(style_share=share))
    teacher, student = load_model_file(keras_path), load_model_file(keras_path)
    split, logits, styled = training_set(teacher, clean, human, config)
    if not train_labels:
        originals = min(config.original_samples, len(clean.train))
        split, logits = Split(split.x[:originals], split.y[:originals]), logits[:originals]
    distill(student, logits, split, distill_config(config))
    return student, styled.summary() or {}


def all_picks(view: StreamView, seed: int) -> dict[str, np.ndarray]:
    """style_probe's active and passive picks, the active pick's two parts drawn alone, the class-skew pick and the
    coverage picks."""
    order = np.argsort(view.confidence, kind="stable")
    rng = np.random.default_rng(seed + 100)
    count = len(view.confidence)
    return picks(view.confidence, seed) | {
        "unsure": np.sort(order[:UNSURE]), "random": np.sort(rng.choice(count, LABELS - UNSURE, replace=False)),
        "skew": class_skew_pick(view.answers, view.prior, seed),
        "typical pixels": typical_pick(view.pixels, LABELS, seed),
        "typical features": typical_pick(view.features, LABELS, seed),
        "badge": badge_pick(view.embedding, LABELS, seed), "k-center": k_center_pick(view.features, LABELS, seed)}


def skew_error_bound(answers: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Per class: the least share of the frames given that answer that must be wrong if the field's classes occur
    as in training (at most prior x N frames are truly of it), 1 - prior / answer share, 0 when not over-given."""
    given = np.bincount(answers, minlength=len(prior)) / max(len(answers), 1)
    return np.clip(1.0 - prior / np.maximum(given, 1e-12), 0.0, 1.0)


def class_skew_pick(answers: np.ndarray, prior: np.ndarray, seed: int) -> np.ndarray:
    """LABELS stream frames drawn with weight max(the error bound of their answer, SKEW_FLOOR): aimed at the
    confident errors a shifted field piles on a few answers (SMART's runtime class skew), whatever the confidence."""
    weight = np.maximum(skew_error_bound(answers, prior), SKEW_FLOOR)[answers]
    rng = np.random.default_rng(seed + 500)
    return np.sort(rng.choice(len(answers), LABELS, replace=False, p=weight / weight.sum()))


def where_the_errors_are(answers: np.ndarray, confidence: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The deployed model on the stream: its accuracy on the frames it is least sure of and on the rest, the share
    of all its errors among the former, and the share of its two most given answers (a shifted field's
    confident, systematic error)."""
    order = np.argsort(confidence, kind="stable")
    right = answers == truth
    unsure, rest = order[:UNSURE], order[UNSURE:]
    given = np.sort(np.bincount(answers))[::-1]
    return {"unsure_accuracy": float(right[unsure].mean()), "rest_accuracy": float(right[rest].mean()),
            "errors_among_unsure": float((~right[unsure]).sum() / max((~right).sum(), 1)),
            "top2_answer_share": float(given[:2].sum() / len(truth))}


def importance_repeats(confidence: np.ndarray, index: np.ndarray, seed: int) -> np.ndarray:
    """Per label of the active pick: repeats proportional to 1 / its chance of being picked, `human_repeat` per
    label on average, rounded at random so the expected total is kept."""
    unsure = np.isin(index, np.argsort(confidence, kind="stable")[:UNSURE])
    weight = np.where(unsure, 1.0, (len(confidence) - UNSURE) / (LABELS - UNSURE))
    repeats = weight * HUB["human_repeat"] * len(index) / weight.sum()
    return np.floor(repeats + np.random.default_rng(seed).random(len(index))).astype(np.int64)


def ceiling(name: str, field: Dataset, held: Split, keras_path: Path, clean: Dataset,
            unsure: Split) -> list[dict[str, Any]]:
    """The retrain on 20,000 truly labelled field images, for more and more epochs; also its accuracy on the
    stream frames the deployed model is least sure of (can anyone's model read them?)."""
    x, y = field.train.x[:CEILING_IMAGES], field.train.y[:CEILING_IMAGES]
    human = HumanSet(np.asarray(x), y, tuple(f"t{i}" for i in range(len(y))))
    rows = []
    for epochs in CEILING_EPOCHS:
        model, _ = retrain(keras_path, clean, human, 0.5, 0, True, human_repeat=1, epochs=epochs)
        rows.append({"field": name, "labels": len(y), "epochs": epochs,
                     "field_accuracy": accuracy(model, held.x, held.y),
                     "unsure_accuracy": accuracy(model, unsure.x, unsure.y),
                     "clean_test_accuracy": accuracy(model, clean.test.x, clean.test.y)})
        print(rows[-1], flush=True)
    return rows


def one_field(field: str, keras_path: Path, temperature: float, clean: Dataset) -> dict[str, list[dict[str, Any]]]:
    """The cells' rows, the second round's and the ceiling's on one field."""
    data = load_dataset(field, seed=0)
    stream, held = stream_and_held(data)
    deployed = load_model_file(keras_path)
    view = stream_view(deployed, stream, temperature, clean)
    confidence, answers = view.confidence, view.answers
    rows = [{"field": field, "seed": "-", "cell": "deployed", "field_accuracy": accuracy(deployed, held.x, held.y),
             "clean_test_accuracy": accuracy(deployed, clean.test.x, clean.test.y),
             **where_the_errors_are(answers, confidence, stream.y)}]
    for seed in SEEDS:
        chosen = all_picks(view, seed)
        for cell, plan in CELLS.items():
            idx = chosen[plan.pick]
            y = stream.y[idx] if plan.truth else crowd_labels(stream.y[idx], confidence[idx])
            rows_of = (np.repeat(np.arange(len(idx)), importance_repeats(confidence, idx, seed)) if plan.weighted
                       else np.arange(len(idx)))
            human = human_set(stream, idx[rows_of], y[rows_of])
            start = time.perf_counter()
            model, style = retrain(keras_path, clean, human, plan.share, seed, plan.train_labels,
                                   **({"human_repeat": 1} if plan.weighted else {}),
                                   **({"epochs": plan.epochs} if plan.epochs else {}))
            rows.append({"field": field, "seed": seed, "cell": cell,
                         "label_accuracy": float(np.mean(y == stream.y[idx])),
                         "model_errors": float(np.mean(answers[idx] != stream.y[idx])),
                         "field_accuracy": accuracy(model, held.x, held.y),
                         "clean_test_accuracy": accuracy(model, clean.test.x, clean.test.y),
                         "added_noise": style.get("added_noise", 0.0),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(rows[-1], flush=True)
    unsure = np.sort(np.argsort(confidence, kind="stable")[:UNSURE])
    return {"rows": rows,
            "rounds": second_round(field, keras_path, confidence, temperature, clean, stream, held, SEEDS, retrain,
                                   crowd_labels),
            "ceiling": ceiling(field, data, held, keras_path, clean, Split(stream.x[unsure], stream.y[unsure]))}


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (field, cell)."""
    out = []
    for field in FIELDS:
        for cell in CELLS:
            of = [r for r in rows if (r["field"], r["cell"]) == (field, cell)]
            values = [r["field_accuracy"] for r in of]
            out.append({"field": field, "cell": cell,
                        "model_errors_mean": float(np.mean([r["model_errors"] for r in of])),
                        "field_accuracy_mean": float(np.mean(values)),
                        "field_accuracy_min": min(values), "field_accuracy_max": max(values),
                        "clean_test_mean": float(np.mean([r["clean_test_accuracy"] for r in of]))})
    return out


def previous_run(path: Path, tau: float) -> dict[str, Any] | None:
    """The last run on another compile, kept so a re-run on a fresh compile shows how much the deployed model moves
    the cells (its compile's tau and temperature and its means: one level, not a history). A re-run on the same
    compile (same tau) keeps the one its predecessor kept."""
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    if old["tau"] == tau:
        return old.get("previous")
    return {"tau": old["tau"], "temperature": old["temperature"], "summary": old["summary"]}


def against_previous(data: dict[str, Any]) -> list[str]:
    """Per field and cell both runs have: this run's mean beside the previous run's, and active minus passive."""
    previous = data.get("previous")
    if not previous:
        return []
    before = {(r["field"], r["cell"]): r["field_accuracy_mean"] for r in previous["summary"]}
    now = {(r["field"], r["cell"]): r["field_accuracy_mean"] for r in data["summary"]}
    rows = [{"field": f, "cell": c, "this_run": now[f, c], "previous_run": before[f, c]}
            for f, c in now if (f, c) in before]
    for field in FIELDS:
        pairs = [(now, "this_run"), (before, "previous_run")]
        if all((field, c) in d for d, _ in pairs for c in ("active + style", "passive + style")):
            rows.append({"field": field, "cell": "active minus passive (+ style)"}
                        | {k: d[field, "active + style"] - d[field, "passive + style"] for d, k in pairs})
    return [f"This run against the one before it, on another compile (its tau {previous['tau']:.3f}, temperature "
            f"{previous['temperature']:.3f}; field accuracy means over the same seeds):", "",
            markdown_table(rows, ["field", "cell", "this_run", "previous_run"]), ""]


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    return "\n".join([
        "# What the labels teach beside the field's style: one retrain on D4 and D5 — annotators SIMULATED", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; one retrain per cell, seeds {SEEDS}; wall "
        f"{data['wall_seconds']:.0f} s. Deployed tau {data['tau']:.3f}, temperature {data['temperature']:.3f}.", "",
        HOW, "", "Over the seeds (field: held-out field images; clean test: the clean test split):", "",
        markdown_table(data["summary"], ["field", "cell", "model_errors_mean", "field_accuracy_mean",
                                         "field_accuracy_min", "field_accuracy_max", "clean_test_mean"]), "",
        "The deployed model on the stream (where its errors are):", "",
        markdown_table([r for r in data["rows"] if r["cell"] == "deployed"],
                       ["field", "field_accuracy", "unsure_accuracy", "rest_accuracy", "errors_among_unsure",
                        "top2_answer_share"]), "",
        f"`unsure_accuracy` / `rest_accuracy`: on the {UNSURE} stream frames it is least sure of / on the others; "
        "`errors_among_unsure`: the share of all its stream errors that are among those frames; "
        "`top2_answer_share`: the share of stream frames given its two most frequent answers.", "",
        "Every cell:", "",
        "`label_accuracy`: the SIMULATED crowd's answers right; `model_errors`: the deployed model wrong on the "
        "picked frames.", "",
        markdown_table(data["rows"], ["field", "seed", "cell", "label_accuracy", "model_errors", "field_accuracy",
                                      "clean_test_accuracy", "added_noise", "seconds"]), "",
        "The ceiling (20,000 truly labelled field images, + style, one retrain, seed 0):", "",
        markdown_table(data["ceiling"], ["field", "labels", "epochs", "field_accuracy", "unsure_accuracy",
                                         "clean_test_accuracy"]), "",
        f"`unsure_accuracy`: on the {UNSURE} stream frames the deployed model is least sure of (the active pick's "
        "unsure part).", "", *rounds_part(data), *against_previous(data)])


def rounds_part(data: dict[str, Any]) -> list[str]:
    """The second round's means and rows (absent from runs before it)."""
    if "rounds" not in data:
        return []
    return [ROUNDS_HOW, "", markdown_table(data["rounds_summary"], ["field", "second", "first_accuracy",
                                                                    "first_model_right", "field_accuracy"]), "",
            markdown_table(data["rounds"], ["field", "seed", "second", "first_accuracy", "first_model_right",
                                            "field_accuracy"]), ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/label_value_probe"))
    parser.add_argument("--render", action="store_true", help="only re-write the MD from the JSON")
    args = parser.parse_args()
    if args.render:
        data = json.loads((RESULTS / "label_value_probe.json").read_text())
    else:
        start = time.perf_counter()
        keras_path, tau, temperature, clean = deployed_model(args.work)
        measured = [one_field(field, keras_path, temperature, clean) for field in FIELDS]
        rows, rounds = [r for m in measured for r in m["rows"]], [r for m in measured for r in m["rounds"]]
        data = {"rows": rows, "summary": summary(rows), "ceiling": [r for m in measured for r in m["ceiling"]],
                "rounds": rounds, "rounds_summary": round_means(rounds),
                "settings": HUB, "tau": tau, "temperature": temperature, "machine": machine(),
                "annotators": "SIMULATED, m=3, accuracy 0.9", "wall_seconds": round(time.perf_counter() - start, 1),
                "previous": previous_run(RESULTS / "label_value_probe.json", tau)}
    json_path, md_path = write_results("label_value_probe", data, render(data))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
