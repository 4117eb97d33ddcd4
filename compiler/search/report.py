"""Search artifacts a person reads: a Markdown report and PNG plots (candidates in A/L/S space, reward over time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hgen.compiler.search.context import Candidate


def plot_candidates(candidates: tuple[Candidate, ...], path: Path, chosen: Candidate | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [c for c in candidates if c.measured is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if scored:
        points = left.scatter([c.measured.labour for c in scored], [c.measured.accuracy for c in scored],
                              c=[c.measured.storage_mb for c in scored], cmap="viridis", s=14,
                              marker="o", alpha=0.75)
        fig.colorbar(points, ax=left, label="storage S (MB)")
        if chosen is not None and chosen.measured is not None:
            left.scatter([chosen.measured.labour], [chosen.measured.accuracy], marker="*", s=220, c="red",
                         label="chosen")
            left.legend(loc="lower right")
    left.set_xlabel("labour L (Eq. 13; simulated annotators)")
    left.set_ylabel("accuracy A (held-out search split)")
    left.set_title("candidates")
    episodes = sorted({c.episode for c in candidates})
    best_per_episode = [max(c.reward for c in candidates if c.episode == e) for e in episodes]
    running, best = [], float("-inf")
    for value in best_per_episode:
        best = max(best, value)
        running.append(best)
    right.plot(episodes, best_per_episode, ".", alpha=0.6, label="episode reward")
    right.plot(episodes, running, "-", label="best so far")
    right.set_yscale("symlog")
    right.set_xlabel("episode")
    right.set_ylabel("reward R1 + R2")
    right.legend()
    right.set_title("reward over episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _proposed(summary: dict[str, Any]) -> str:
    """Where tau came from: the strategy's proposal, refined exactly on the search split (when refinement ran)."""
    proposal = summary.get("tau_proposed")
    if proposal is None:
        return ""
    searched = summary.get("tau_search", summary["tau"])
    return (f" (chosen on the search split by the Eq. 14-15 reward among thresholds whose labour and latency upper "
            f"bounds meet L_c and T_d: from the proposal {proposal:.3f} to {searched:.3f} for the searched "
            f"backbone, then for the final fine-tuned model)")


def markdown_report(summary: dict[str, Any]) -> str:
    d, device = summary["demands"], summary["device"]
    origin, final = summary["origin"], summary["final"]
    rows = [("origin (test)", origin), ("H-DNN (test)", final)]
    lines = [
        f"# hgen-compile report: {summary['model']} on {summary['dataset']} for `{device['name']}`",
        "",
        f"Strategy `{summary['strategy']}`, seed {summary['seed']}: {summary['episodes']} episodes, "
        f"{summary['evaluations']} backbones evaluated, {summary['search_seconds']:.0f} s of search, "
        f"{summary['wall_seconds']:.0f} s in all. Stopped: {summary['stop_reason']}.",
        f"Device `{device['name']}` ({device['processor']}, {device['battery_mah']} mAh): latency is "
        + ("measured on this host." if device["measured"] else
           f"ESTIMATED as this host's LiteRT latency x {device['latency_scale']} (not measured on the device)."),
        "Annotators are SIMULATED (seeded crowd).",
        "",
        f"Demands: A >= {d['accuracy']}, T <= {d['latency_ms']} ms; budgets S <= {d['storage_mb']} MB, "
        f"E <= {d['energy_mj']} mJ, L <= {d['labour']}.",
        "",
        "| | A (with people) | A (model only) | T (ms) | S (MB) | E (mJ) | L | params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows:
        lines.append(f"| {label} | {row['accuracy']:.4f} | {row['accuracy_model_only']:.4f} | {row['latency_ms']:.2f} | "
                     f"{row['storage_mb']:.4f} | "
                     f"{row['energy_mj']:.4f} | {row['labour']:.4f} | {row['params']} |")
    lines += ["", (f"Plan: `{summary['plan']}`; tau = {summary['tau']:.3f}{_proposed(summary)}; "
                   f"temperature = {summary['temperature']:.3f}."), "",
              ("Candidates skipped on paper (S or E over budget, never fine-tuned): "
               f"{summary.get('skipped_on_paper', 0)}."),
              "", _verdict(summary), "",
              *([f"Nobody is sent to people (L 0): {summary['nobody_asked']}.", ""] if summary.get("nobody_asked")
                else []),
              "![candidates and reward](search.png)", ""]
    return "\n".join(lines)


def _verdict(summary: dict[str, Any]) -> str:
    """Search-split feasibility (with its margin) beside the test split's verdict: the test split decides."""
    search = ("a candidate met every demand on the search split" if summary["feasible_in_search"]
              else "NO candidate met every demand on the search split")
    bound = f" (A judged by the {summary['accuracy_bound']})" if summary.get("accuracy_bound") else ""
    test = ("Demands MET on the test split." if summary["met_on_test"] else
            "Demands NOT MET on the test split: " + "; ".join(summary["violations"]) + ".")
    return f"Search: {search}{bound}. {test}"
