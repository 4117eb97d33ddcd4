"""H-Faster-RCNN benchmark (issue 21, Fig. 13c-like): the origin two-stage detector vs H-Faster-RCNN at tau 0.3 on
three challenge variants of the digit detection canvases (noise, low resolution, low light), H-YOLO beside it.

How the data is made: `load_detection_dataset("digits-det:<variant>", seed, limit)`: 1-3 scikit-learn digits
(16-26 px) pasted on a 64x64 grey canvas, digits of the train / validation / test canvases from disjoint digit
splits, then the challenge variant at its default parameters (`hgen.compiler.data.challenges`). Per variant and
seed: the two-stage detector (`two_stage_detector`) and the grid detector (`grid_detector`, H-YOLO's) are trained
on the train canvases, their temperature fitted on the validation canvases (the two-stage detector's on the object
slots only, since 90afa8d: fitted on every slot the easy background set T and few canvases fell below tau 0.3), and
scored on the test canvases.

People are SIMULATED (seeded; they never look at images): M annotators per escalated canvas, each marking every
true object with Gaussian corner noise of NOISE_PX pixels, missing one with probability MISS. For H-Faster-RCNN they
mark attention regions (no class), merged by the hub's own `region_gmm` aggregator (Eq. 8, components by AIC); the
device's second stage scores the prior anchors placed there (`hgen.runtime.hdnn.faster_rcnn`). For H-YOLO they draw
boxes with a class (wrong with probability WRONG_CLASS), merged by `box_union` and fused by the runtime's rule.

mAP@0.5 over the test canvases (VOC all-point); a canvas not escalated keeps the model's own boxes (score >= 0.05,
as every mAP here ranks); an escalated H-Faster-RCNN canvas gets, per people's region, every class the second stage
gives probability >= 0.05 (the same ranked form; the device itself answers with the top class). share_to_people = escalated canvases / all (c < tau); labour = mean Eq. 3 operations per
test canvas, L0 = d * M with d = 1 + 2 (1 - c) (Eq. 9) for escalated canvases, 0 otherwise. Wall times are not
reported (the 2 cores were shared with other jobs). Run: nice -n 10 .venv/bin/python tools/bench/hfrcnn.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
from benchlib import markdown_table, write_results

from hgen.hub.aggregators import AggregationInput, get_aggregator
from hgen.protos import hub_pb2
from hgen.runtime.hdnn import FusionParams, difficulty_from_confidence, get_kind, needs_human
from hgen.runtime.hdnn.faster_rcnn import fuse_image, split

VARIANTS = ("noise", "lowres", "lowlight")
TAU, M, NOISE_PX, MISS, WRONG_CLASS = 0.3, 3, 1.0, 0.05, 0.05
EVAL_SCORE = 0.05
CANVAS = 64


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def people_answers(truth: np.ndarray, rng: np.random.Generator, regions: bool) -> tuple[hub_pb2.Answer, ...]:
    """M SIMULATED annotators' answers for one canvas (pixel coordinates), regions or classed boxes."""
    pixels = np.array(truth, np.float64).reshape(-1, 5)
    pixels[:, :4] *= CANVAS
    answers = []
    for person in range(M):
        shapes = []
        for x0, y0, x1, y1, cls in pixels:
            if rng.random() < MISS:
                continue
            a, b, c, d = np.array([x0, y0, x1, y1]) + rng.normal(0.0, NOISE_PX, 4)
            c, d = max(c, a + 1), max(d, b + 1)
            if regions:
                shapes.append(hub_pb2.Region(x_min=a, y_min=b, x_max=c, y_max=d, weight=1.0))
            else:
                label = int(cls) if rng.random() >= WRONG_CLASS else int((cls + rng.integers(1, 10)) % 10)
                shapes.append(hub_pb2.Box(x_min=a, y_min=b, x_max=c, y_max=d, class_id=label))
        answer = hub_pb2.Answer(annotator_id=f"sim-{person}", simulated=True)
        (answer.regions.regions if regions else answer.boxes.boxes).extend(shapes)
        answers.append(answer)
    return tuple(answers)


def aggregate(answers: tuple[hub_pb2.Answer, ...], regions: bool) -> np.ndarray:
    """The hub's aggregator on the answers -> normalised rows: regions [k, 5] or boxes [k, 6]."""
    name = "region_gmm" if regions else "box_union"
    label = get_aggregator(name).aggregate(AggregationInput("s", answers, M, 10))
    if regions:
        rows = [(r.x_min, r.y_min, r.x_max, r.y_max, r.weight) for r in label.regions.regions]
        out = np.array(rows, np.float64).reshape(-1, 5)
    else:
        rows = [(b.x_min, b.y_min, b.x_max, b.y_max, b.class_id, b.score) for b in label.boxes.boxes]
        out = np.array(rows, np.float64).reshape(-1, 6)
    out[:, :4] = np.clip(out[:, :4] / CANVAS, 0.0, 1.0)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def with_people(kind_name: str, outputs: np.ndarray, temperature: float, truth: tuple[np.ndarray, ...],
                seed: int) -> dict[str, Any]:
    """Origin and H-DNN detections of every test canvas, the gate and the labour."""
    kind, params = get_kind(kind_name), FusionParams(temperature)
    regions = kind.label == "regions"
    own = kind.detect(outputs, params, EVAL_SCORE) if regions else _yolo_detect(outputs, temperature)
    confidence = kind.confidence(outputs, params)
    gate = needs_human(confidence, TAU)
    rng = np.random.default_rng([seed, 0x9E0])
    final = list(own)
    for i in np.flatnonzero(gate):
        answer = aggregate(people_answers(truth[i], rng, regions), regions)
        if regions:  # no region (everyone missed every object): the device keeps its own boxes
            final[i] = fuse_image(split(outputs[i:i + 1]), 0, answer, temperature, EVAL_SCORE) if len(answer) else own[i]
        else:
            final[i] = kind.fuse(outputs[i:i + 1], [answer], params)[0]
    labour = float(np.sum(difficulty_from_confidence(confidence[gate]) * M) / len(outputs))
    return {"own": own, "final": final, "share": float(gate.mean()), "labour": labour}


def _yolo_detect(outputs: np.ndarray, temperature: float) -> list[Any]:
    from hgen.runtime.hdnn.yolo import decode

    return decode(outputs, temperature, EVAL_SCORE)


def run_variant(variant: str, seed: int, limit: int, epochs: int, yolo_epochs: int) -> dict[str, Any]:
    from hgen.compiler.data.detection import load_detection_dataset
    from hgen.compiler.metrics.detection import mean_average_precision
    from hgen.compiler.models import build_model
    from hgen.compiler.models.grid_detector import (DetectorTrainConfig, calibrate_detector, predict_grid,
                                                    train_detector)
    from hgen.compiler.models.two_stage_detector import (TwoStageTrainConfig, calibrate_two_stage, predict_slots,
                                                         train_two_stage)

    data = load_detection_dataset(f"digits-det:{variant}", seed=seed, limit=limit)
    truth, n = data.test.boxes, data.num_classes
    frcnn = build_model("two_stage_detector", data.input_shape, n)
    train_two_stage(frcnn, data.train, n, TwoStageTrainConfig(epochs=epochs, seed=seed))
    t_frcnn = calibrate_two_stage(frcnn, data.val, n)
    h = with_people("faster_rcnn", predict_slots(frcnn, data.test.x), t_frcnn, truth, seed)
    log(f"{variant} seed {seed}: two-stage trained, T {t_frcnn:.3g}")
    grid = build_model("grid_detector", data.input_shape, n)
    train_detector(grid, data.train, n, DetectorTrainConfig(epochs=yolo_epochs, seed=seed))
    t_grid = calibrate_detector(grid, data.val, n)
    y = with_people("yolo", predict_grid(grid, data.test.x), t_grid, truth, seed)
    row = {"variant": variant, "seed": seed,
           "origin_map": mean_average_precision(h["own"], truth, n),
           "hfrcnn_map": mean_average_precision(h["final"], truth, n),
           "yolo_origin_map": mean_average_precision(y["own"], truth, n),
           "hyolo_map": mean_average_precision(y["final"], truth, n),
           "labour": h["labour"], "share_to_people": h["share"],
           "hyolo_labour": y["labour"], "hyolo_share_to_people": y["share"],
           "test_canvases": len(truth)}
    log(f"{row}")
    return row


def median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        row: dict[str, Any] = {"variant": variant}
        for key in mine[0]:
            if key not in ("variant", "seed"):
                row[key] = float(statistics.median(r[key] for r in mine))
        row["target_reached"] = bool(all(r["hfrcnn_map"] > r["origin_map"] for r in mine))
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=1500, help="canvases per split at most (test 600)")
    parser.add_argument("--epochs", type=int, default=10, help="two-stage detector epochs")
    parser.add_argument("--yolo-epochs", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 seed, 300 canvases, 2 epochs (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.limit, args.epochs, args.yolo_epochs = 1, 300, 2, 2
    runs = [run_variant(v, seed, args.limit, args.epochs, args.yolo_epochs)
            for seed in range(args.seeds) for v in VARIANTS]
    rows = median_rows(runs)
    reached = all(r["target_reached"] for r in rows)
    setup = {"tau": TAU, "m": M, "corner_noise_px": NOISE_PX, "miss": MISS, "wrong_class_yolo": WRONG_CLASS,
             "seeds": args.seeds, "limit": args.limit, "epochs": args.epochs, "yolo_epochs": args.yolo_epochs,
             "annotators": "SIMULATED", "eval_score_threshold": EVAL_SCORE}
    write_results("hfrcnn" if not args.quick else "hfrcnn_quick",
                  {"setup": setup, "rows": rows, "runs": runs, "target": "hfrcnn_map > origin_map on every variant",
                   "target_reached": reached}, report(rows, setup, reached))
    return 0


def small_margins(rows: list[dict[str, Any]], setup: dict[str, Any]) -> list[str]:
    """A sentence on variants whose gain is below 0.01 mAP: too small for the seeds run to tell its sign."""
    small = [f"{r['variant']} {r['hfrcnn_map'] - r['origin_map']:+.4f} ({r['share_to_people']:.1%} to people)"
             for r in rows if abs(r["hfrcnn_map"] - r["origin_map"]) < 0.01]
    if not small:
        return []
    return [f"Gains below 0.01 mAP: {', '.join(small)}; with {setup['seeds']} seed(s) their sign is not established "
            f"(the gate sends few canvases at tau {setup['tau']}, and only those can gain).", ""]


def report(rows: list[dict[str, Any]], setup: dict[str, Any], reached: bool) -> str:
    columns = ["variant", "origin_map", "hfrcnn_map", "yolo_origin_map", "hyolo_map", "labour", "share_to_people",
               "hyolo_labour", "hyolo_share_to_people", "target_reached"]
    return "\n".join([
        "# H-Faster-RCNN vs its origin (issue 21, Fig. 13c-like) - annotators SIMULATED",
        "",
        f"Digit canvases 64x64 (`digits-det:<variant>`, default challenge parameters), test 600 canvases per variant "
        f"and seed; medians over {setup['seeds']} seed(s); tau {setup['tau']}, m = {setup['m']} SIMULATED annotators "
        f"(corner noise {setup['corner_noise_px']} px, miss {setup['miss']}; H-YOLO's also a wrong class with "
        f"probability {setup['wrong_class_yolo']}). Two-stage detector {setup['epochs']} epochs, grid detector "
        f"{setup['yolo_epochs']} epochs, on {setup['limit']} train canvases. Machine: 2 cores shared with other "
        "jobs, no GPU (no times reported). mAP@0.5 VOC all-point; labour = mean Eq. 3 operations per test canvas "
        "(d = 1 + 2 (1 - c), Eq. 9).",
        "",
        markdown_table(rows, columns),
        "",
        f"Target (H-Faster-RCNN above its origin on every variant): {'REACHED' if reached else 'NOT reached'}.",
        "",
        *small_margins(rows, setup),
        "Regions carry no class: H-Faster-RCNN's people say where, the device's second stage says what, so its gain "
        "is bounded by the head's classification; H-YOLO's people give classes too. Method and data: the module "
        "docstring of tools/bench/hfrcnn.py.",
    ])


if __name__ == "__main__":
    sys.exit(main())
