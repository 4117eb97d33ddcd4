"""Adaptive benchmark (issue 22): run-time adaptation of a deployed H-CNN without retraining.

(b) SMART: skewed FashionMNIST (D5, fashion-mnist:lowres) streams with and without the runtime class prior:
    share to people, labour and fused accuracy, and how soon a switch of mix is detected (`adaptive_skew.py`).
(a) AdaSpring: a replayed battery + load + hub trace through the variant selector (`adaptive_trace.py`).

The deployed model is what `make demo` deploys: hgen-compile's H-CNN for the rpi4 profile on D5 (search with the
demo's settings, fine-tune, calibration, signed LiteRT bundle), compiled once into build/bench/adaptive and reused.
People are SIMULATED (m=3, accuracy 0.9) in every number.

Run: .venv/bin/python tools/bench/adaptive.py [--repeats 5] [--part a|b|all]
Writes tools/bench/results/adaptive.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adaptive_skew import REPLY_LAG, make_streams, run_stream  # noqa: E402
from benchlib import RESULTS, markdown_table, write_results  # noqa: E402

from hgen.edge_agent.config import BundleConfig, PriorConfig  # noqa: E402
from hgen.edge_agent.model import load_model  # noqa: E402

DATASET, WORK, M, ACCURACY = "fashion-mnist:lowres", Path("build/bench/adaptive"), 3, 0.9
REPO = Path(__file__).resolve().parents[2]


def compiled_bundle(work: Path) -> dict[str, Any]:
    """The demo's compile for rpi4 on D5, built once (about 3 minutes on 2 cores) and reused."""
    summary = work / "compile" / "summary.json"
    if not summary.exists():
        from hgen.compiler.demo import compile_stage, demo_config, with_preset

        settings = with_preset(demo_config(dataset=DATASET, device="rpi4", engines=("litert",), out=str(work)),
                               "fashion-mnist")
        compile_stage(settings, DATASET, work, log=lambda message: print(message, flush=True))
    return json.loads(summary.read_text())


def pool(summary: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Any]:
    """The compile's own test split through the signed bundle's LiteRT engine, and the device's Model."""
    from hgen.compiler.data import load_dataset
    from hgen.compiler.demo.pools import bundle_logits

    data = load_dataset(DATASET, seed=summary.get("seed", 0))
    bundle = summary["bundle"]
    logits, _ = bundle_logits(bundle["archive"], bundle["public_key"], summary["device"]["target"], data.test.x)
    model = load_model(Path(bundle["archive"]), BundleConfig(path=bundle["archive"], public_key=bundle["public_key"],
                                                             engine="litert"))
    return logits, np.asarray(data.test.y), model


def skew_part(summary: dict[str, Any], seeds: range, prior: PriorConfig) -> dict[str, Any]:
    from hgen.compiler.metrics.hdnn import ask_crowd
    from hgen.hub.crowd import SimulatedCrowd

    logits, labels, model = pool(summary)
    crowd = SimulatedCrowd.uniform(M, ACCURACY, int(labels.max()) + 1, seed=0)
    answers = ask_crowd(crowd, logits, labels, M, model.params.temperature)
    runs = []
    for seed in seeds:
        for stream in make_streams(labels, seed):
            runs.append({"seed": seed, **run_stream(model, logits, labels, answers, stream, prior)})
    model.close()
    return {"runs": runs, "tau": model.tau, "temperature": model.params.temperature, "pool": int(len(labels)),
            "prior": prior.model_dump(), "reply_lag_frames": REPLY_LAG}


SKEW_KEYS = ("share_with_prior", "share_without", "labour_with_prior", "labour_without", "fused_with_prior",
             "fused_without", "model_only_with_prior", "model_only_without")


def skew_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over repeats per stream, and the targets: >= 20 % less labour at >= fused accuracy (skewed), no worse
    (uniform), switch detected within two windows."""
    rows = []
    for name in dict.fromkeys(r["stream"] for r in runs):
        mine = [r for r in runs if r["stream"] == name]
        row: dict[str, Any] = {"stream": name, "repeats": len(mine)}
        for key in SKEW_KEYS:
            row[key] = round(statistics.median(r[key] for r in mine), 4)
        row["labour_saved"] = round(1 - row["labour_with_prior"] / row["labour_without"], 4)
        row["fused_delta"] = round(row["fused_with_prior"] - row["fused_without"], 4)
        saved = [1 - r["labour_with_prior"] / r["labour_without"] for r in mine]
        row["labour_saved_min"] = round(min(saved), 4)
        row["fused_delta_min"] = round(min(r["fused_with_prior"] - r["fused_without"] for r in mine), 4)
        row["runs_20pct_less_labour_not_worse"] = (
            f"{sum(s >= 0.2 and r['fused_with_prior'] >= r['fused_without'] for s, r in zip(saved, mine))}/{len(mine)}"
            if name != "uniform" else "n/a (target: no worse)")
        if "switch_at_frame" in mine[0]:
            windows = [r["switch_detected_windows"] for r in mine]
            row["switch_detected_windows_max"] = None if None in windows else max(windows)
            row["switch_detected"] = f"{sum(w is not None and w <= 2 for w in windows)}/{len(windows)} within 2"
        rows.append(row)
    return rows


def skew_targets(rows: list[dict[str, Any]]) -> dict[str, bool]:
    by = {r["stream"]: r for r in rows}
    skewed = [r for r in rows if r["stream"].startswith(("skewed", "switch"))]
    return {
        "skewed_20pct_less_labour_at_equal_or_better_fused": all(
            r["labour_saved"] >= 0.2 and r["fused_delta"] >= 0 for r in skewed),
        "uniform_no_worse": by["uniform"]["fused_delta"] >= 0 and by["uniform"]["labour_saved"] >= 0,
        "switch_within_two_windows": all(r.get("switch_detected_windows_max") is not None
                                         and r["switch_detected_windows_max"] <= 2 for r in rows
                                         if "switch_detected" in r),
    }


def markdown(result: dict[str, Any], wall: float) -> str:
    lines = ["# Adaptive benchmark (issue 22)", "",
             f"Machine: 2 cores, no GPU. Wall time {wall:.0f} s. Dataset: FashionMNIST at low resolution (D5); "
             "annotators SIMULATED (m=3, accuracy 0.9) in every number.", ""]
    skew = result.get("skew_detail")
    if skew:
        lines += ["## (b) Runtime class prior (SMART) on skewed streams", "",
                  f"Deployed model: the demo's rpi4 compile (tau {skew['tau']:.3f}, T {skew['temperature']:.3f}), run "
                  "through its signed LiteRT bundle. Streams of 4,000 frames drawn from the compile's 10,000-image "
                  "test split: `uniform`; `skewed-3` (3 classes = 80 % of frames); `skewed-2` (2 classes = 80 %); "
                  "`switch-3` (3 classes at 80 %, switching to 3 other classes at frame 2,000). Dominant classes "
                  f"are drawn per repeat; {result['repeats']} repeats (seeds 1..{result['repeats']}), medians. "
                  f"People's replies reach the device {skew['reply_lag_frames']} frames after the escalation. "
                  f"Prior settings: window {skew['prior']['window']}, threshold {skew['prior']['threshold']}, "
                  f"smoothing {skew['prior']['smoothing']}. Labour = Eq. 13's L from the operations the SIMULATED "
                  "people spent.", "",
                  markdown_table(result["skew_table"], ["stream", "share_without", "share_with_prior",
                                                        "labour_without", "labour_with_prior", "labour_saved",
                                                        "fused_without", "fused_with_prior", "fused_delta",
                                                        "model_only_without", "model_only_with_prior",
                                                        "switch_detected"]), "",
                  "Spread over the repeats (worst run per stream):", "",
                  markdown_table(result["skew_table"], ["stream", "labour_saved_min", "fused_delta_min",
                                                        "runs_20pct_less_labour_not_worse"]), "",
                  "Per run (seed, dominant classes):", "",
                  markdown_table([{**r, "dominant": " then ".join(",".join(map(str, d)) for d in r["dominant"])}
                                  for r in skew["runs"]],
                                 ["seed", "stream", "dominant", "labour_without", "labour_with_prior",
                                  "fused_without", "fused_with_prior", "switch_detected_windows"]), "",
                  "Reading: on the uniform stream the trusted labels' mix stays within the threshold of the "
                  "uniform mix, so the prior is never applied and the results are the same as without it. The "
                  "runtime applies the prior only when a full window is more than the threshold away from uniform: "
                  "without that test, seed 0's uniform stream (not in the tables) lost 0.5 points of fused accuracy, "
                  "because the model is confident more often on easy classes and the window learns that bias. The "
                  "settings are the agent's defaults, not tuned on these streams; seed 0's skewed-3 stream (coat, "
                  "shirt, pullover: classes the model confuses with each other) saved only 16 % labour (fused +2.5 "
                  "points): a prior cannot separate classes that are all frequent. Detection windows count trusted "
                  "labels from the switch to the detection, in windows.", "",
                  "Targets: " + ", ".join(f"{k}: {'reached' if v else 'NOT reached'}"
                                          for k, v in result["skew_targets"].items()), ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Labour and fused accuracy per stream, with and without the prior (medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.get("skew_table") or []
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(rows))
    for ax, key, title in ((axes[0], "labour", "labour L (SIMULATED people)"), (axes[1], "fused", "fused accuracy")):
        ax.bar(x - 0.2, [r[f"{key}_without"] for r in rows], 0.4, label="without prior")
        ax.bar(x + 0.2, [r[f"{key}_with_prior"] for r in rows], 0.4, label="with prior (SMART)")
        ax.set_xticks(x, [r["stream"] for r in rows])
        ax.set_title(title)
    axes[1].set_ylim(0.8, 1.0)
    axes[0].legend()
    figure.suptitle("Runtime class prior on FashionMNIST streams (medians over repeats)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--part", choices=("a", "b", "all"), default="all")
    parser.add_argument("--first-seed", type=int, default=1, help="streams of seeds first..first+repeats-1 "
                                                                  "(seed 0 was used to choose the prior settings)")
    parser.add_argument("--window", type=int, default=PriorConfig().window)
    parser.add_argument("--threshold", type=float, default=PriorConfig().threshold)
    parser.add_argument("--smoothing", type=float, default=PriorConfig().smoothing)
    parser.add_argument("--no-write", action="store_true", help="print the table only (settings exploration)")
    args = parser.parse_args()
    start = time.monotonic()
    summary = compiled_bundle(REPO / WORK)
    result: dict[str, Any] = {"repeats": args.repeats, "annotators": f"SIMULATED, m={M}, accuracy {ACCURACY}"}
    if args.part in ("b", "all"):
        prior = PriorConfig(enabled=True, window=args.window, threshold=args.threshold, smoothing=args.smoothing)
        detail = skew_part(summary, range(args.first_seed, args.first_seed + args.repeats), prior)
        table = skew_summary(detail["runs"])
        result.update({"skew": [{k: r[k] for k in ("stream", "share_with_prior", "share_without",
                                                   "fused_with_prior", "fused_without")} for r in table],
                       "skew_table": table, "skew_targets": skew_targets(table), "skew_detail": detail})
    text = markdown(result, time.monotonic() - start)
    if args.no_write:
        print(text)
        return
    paths = write_results("adaptive", result, text, RESULTS)
    plot(result, RESULTS / "adaptive.png")
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
