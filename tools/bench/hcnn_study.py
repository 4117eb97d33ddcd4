"""H-CNN study on LeNet-5 (paper Fig. 11 and Fig. 13a) -> results/hcnn_study.json and .md.

Fig. 11: tau from 0.1 to 0.9 on the 10,000 D5 test images: accuracy, extra latency per sample, annotations.
Fig. 13a: origin CNN vs H-CNN at tau = 0.2 on D1..D5 (and, for context, at tau = 0.5).
Annotators are simulated (seeded), which every table says. Run: `.venv/bin/python tools/bench/hcnn_study.py`.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchlib import machine, markdown_table, write_results

from hgen.compiler.study import evaluate_at, prepare_hcnn, study_config, tau_grid

DATASETS = {"D1": "mnist:clean", "D2": "mnist:noise", "D3": "fashion-mnist:clean", "D4": "fashion-mnist:noise",
            "D5": "fashion-mnist:lowres"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fig11(epochs: int, m: int, seed: int) -> tuple[list[dict], dict]:
    prepared = prepare_hcnn(study_config(dataset=DATASETS["D5"], epochs=epochs, m=m, seed=seed), log=log)
    rows = []
    for tau in tau_grid(0.1, 0.9, 0.1):
        result = evaluate_at(prepared, tau)
        rows.append({"tau": tau, "accuracy": result.accuracy_fused, "accuracy_model": result.accuracy_model,
                     "extra_latency_ms": result.extra_latency_ms, "annotations": result.annotations,
                     "samples_to_people": result.gated, "labour": result.labour, "simulated": True})
    info = {"samples": len(prepared.dataset.test), "temperature": prepared.temperature,
            "ece_before": prepared.ece_before, "ece_after": prepared.ece_after, "t_infer_ms": prepared.t_infer_ms}
    return rows, info


def fig13a(epochs: int, m: int, seed: int, tau: float, context_tau: float) -> list[dict]:
    rows = []
    for name, spec in DATASETS.items():
        prepared = prepare_hcnn(study_config(dataset=spec, epochs=epochs, m=m, seed=seed), log=log)
        main, context = evaluate_at(prepared, tau), evaluate_at(prepared, context_tau)
        rows.append({"dataset": name, "spec": prepared.dataset.name, "test_samples": len(prepared.dataset.test),
                     "origin_accuracy": main.accuracy_model, "hcnn_accuracy": main.accuracy_fused,
                     "labour": main.labour, "share_to_people": main.share_to_people,
                     f"hcnn_accuracy_tau_{context_tau}": context.accuracy_fused,
                     f"labour_tau_{context_tau}": context.labour, "temperature": prepared.temperature,
                     "simulated": True})
    return rows


def markdown(result: dict) -> str:
    c = result["config"]
    ctx = c["context_tau"]
    return "\n".join([
        "# H-CNN study (LeNet-5; annotators SIMULATED)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, no GPU. One run, seed "
        f"{c['seed']}; LeNet-5 trained {c['epochs']} epochs per dataset; m = {c['m']} simulated annotators of "
        f"accuracy 0.9 (latency log-normal, median 4 s); lambda 0.1; temperature fitted on the validation split; "
        f"T_infer = median of 30 batch-1 LiteRT runs on this host ({result['fig11_info']['t_infer_ms']:.3f} ms). "
        f"Wall time of the whole study: {result['wall_seconds']:.0f} s.",
        "",
        f"## Fig. 11: tau sweep on D5 ({result['fig11_info']['samples']} test inferences)",
        "",
        markdown_table(result["fig11"], ["tau", "accuracy_model", "accuracy", "extra_latency_ms", "annotations",
                                         "samples_to_people", "labour"]),
        "",
        f"ECE {result['fig11_info']['ece_before']:.4f} before / {result['fig11_info']['ece_after']:.4f} after "
        f"temperature scaling (T = {result['fig11_info']['temperature']:.3f}).",
        "",
        f"## Fig. 13a: origin CNN vs H-CNN at tau = {c['tau']} (and tau = {ctx} for context)",
        "",
        markdown_table(result["fig13a"], ["dataset", "spec", "origin_accuracy", "hcnn_accuracy", "labour",
                                          "share_to_people", f"hcnn_accuracy_tau_{ctx}", f"labour_tau_{ctx}"]),
        "",
        result["verdict"],
    ])


def verdict(rows: list[dict], tau: float, ctx: float) -> str:
    gains = {r["dataset"]: r["hcnn_accuracy"] - r["origin_accuracy"] for r in rows}
    wins = [d for d, g in gains.items() if g > 0]
    text = (f"At tau = {tau} the H-CNN beats the origin on {len(wins)} of {len(rows)} datasets "
            f"({', '.join(wins) or 'none'}); gains: " + ", ".join(f"{d} {g * 100:+.2f} pts" for d, g in gains.items()))
    if len(wins) < len(rows):
        text += (f". Where it does not, no test sample has a calibrated top-1 probability below {tau}: with 10 classes "
                 f"the maximum softmax is at least 0.1 and a calibrated LeNet-5 rarely goes below {tau}, so nothing "
                 f"is sent to people. At tau = {ctx} people do see the uncertain samples (see the last columns).")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("-m", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tau", type=float, default=0.2)
    parser.add_argument("--context-tau", type=float, default=0.5)
    args = parser.parse_args()
    start = time.perf_counter()
    fig11_rows, info = fig11(args.epochs, args.m, args.seed)
    fig13_rows = fig13a(args.epochs, args.m, args.seed, args.tau, args.context_tau)
    result = {"config": {"epochs": args.epochs, "m": args.m, "seed": args.seed, "tau": args.tau,
                         "context_tau": args.context_tau, "annotators": "simulated"},
              "fig11": fig11_rows, "fig11_info": info, "fig13a": fig13_rows,
              "wall_seconds": time.perf_counter() - start, "machine": machine()}
    result["verdict"] = verdict(fig13_rows, args.tau, args.context_tau)
    json_path, md_path = write_results("hcnn_study", result, markdown(result))
    print(markdown(result))
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
