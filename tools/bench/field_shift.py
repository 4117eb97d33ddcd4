"""Field-shift benchmark (issue 18): a model compiled on clean FashionMNIST (D3) is deployed into a field it was not
trained on (noise D4, low resolution D5); a device streams field frames, the SIMULATED crowd answers through the
hub, the hub retrains every `threshold` human labels, re-fits the gate on the field, re-lowers, signs and publishes,
and the device runs the new version. After each round the device model is measured on a held-out field split.

Per scenario, from one deployed model (compiled once, the demo's search settings, phone profile):
- active: the device sends what falls under tau plus an audit share of confident frames (edge_agent.gating);
- passive: the device sends the same number of randomly chosen field frames, retrained by the same hub code
  (`retrain.field.audit_share` 1: every frame it sends stands for itself);
- no_retrain: the deployed model on every round;
- oracle: the deployed model fine-tuned offline on 20,000 fully labelled field training images by the same
  enhancement code, its gate re-fitted on the field's 5,000 validation images (an upper bound; the same each round).
Held-out: the last 2,000 field test images, never streamed nor trained on. Stream: the field validation images,
then the rest of the field test images. Annotators are SIMULATED (m=3, accuracy 0.9) everywhere.

Run: nice -n 10 .venv/bin/python tools/bench/field_shift.py [--rounds 5] [--threshold 200] [--compiled DIR]
Writes tools/bench/results/field_shift.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, machine, markdown_table, write_results  # noqa: E402

from hgen.compiler.data import Split, load_dataset  # noqa: E402
from hgen.compiler.demo import compile_stage, demo_config, with_preset  # noqa: E402
from hgen.compiler.metrics import hdnn  # noqa: E402
from hgen.compiler.models import load_model_file  # noqa: E402
from hgen.compiler.train import predict_logits  # noqa: E402
from hgen.hub.app import HubApp  # noqa: E402
from hgen.hub.config import RetrainConfig, parse_hub_config  # noqa: E402
from hgen.hub.crowd import SimulatedCrowd  # noqa: E402
from hgen.hub.retrain.data import HumanSet  # noqa: E402
from hgen.hub.retrain.enhance import enhance  # noqa: E402
from hgen.hub.retrain.field import FieldSet, refit  # noqa: E402
from hgen.hub.testing.crowd import CrowdDriver  # noqa: E402
from hgen.hub.testing.device import GrpcDevice, ReplyLog, enroll  # noqa: E402
from hgen.hub.testing.models import DeployedModel, deploy_compiled, retrain_section  # noqa: E402
from hgen.hub.testing.samples import grey_sample, make_request  # noqa: E402
from hgen.hub.testing.services import free_port  # noqa: E402
from hgen.runtime.calibration import softmax  # noqa: E402

DEVICE, M, ACCURACY, CHUNK, HELD_OUT = "field-cam", 3, 0.9, 250, 2000
ORIGINAL = "fashion-mnist"  # D3: what the deployed model was compiled on
SCENARIOS = {"D3 -> D4 (noise)": "fashion-mnist:noise", "D3 -> D5 (low resolution)": "fashion-mnist:lowres"}
AUDIT = 0.05  # the active device's audit share of confident frames (the hub is told the same)
ORACLE_SAMPLES = 20000
FIELDS = ("labels", "accuracy_model_only", "accuracy_fused", "share_to_people", "labour", "labour_demand")


def evaluate(model: Any, temperature: float, tau: float, held: Split, crowd_seed: int) -> dict[str, float]:
    """Model-only and fused accuracy, share to people and labour (Eq. 13) on the held-out field split."""
    logits = predict_logits(model, held.x)
    crowd = SimulatedCrowd.uniform(M, ACCURACY, 10, seed=crowd_seed)
    answers = hdnn.ask_crowd(crowd, logits, held.y, M, temperature)
    result = hdnn.evaluate_hdnn(logits, held.y, answers, tau=tau, temperature=temperature)
    return {"accuracy_model_only": result.accuracy_model, "accuracy_fused": result.accuracy_fused,
            "share_to_people": result.share_to_people, "labour": result.labour, "tau": tau,
            "temperature": temperature}


class Stream:
    """The device over real gRPC: runs the current model on field frames and sends the gated ones plus an audit
    share of confident ones (active), or randomly chosen frames (passive); cycles the stream like a camera."""

    def __init__(self, app: HubApp, stream: Split, deployed: DeployedModel, passive: bool, seed: int) -> None:
        self.app, self.stream, self.deployed, self.passive = app, stream, deployed, passive
        self.rng = np.random.default_rng(seed)
        self.position = 0
        self.oracle: dict[str, int] = {}  # sample id -> true class: what the simulated people "see"
        self.log = ReplyLog()
        self.device = GrpcDevice(f"127.0.0.1:{app.grpc_port}", self.log, call_timeout_s=300,
                                 token=enroll(app, DEVICE)[DEVICE].bearer)

    def send_until(self, labels: int, version: str, keras_path: str, temperature: float, tau: float) -> dict[str, int]:
        model = load_model_file(keras_path)
        seen = sent = audits = 0
        while sent < labels:
            start = self.position % len(self.stream)
            x, y = self.stream.x[start:start + CHUNK], self.stream.y[start:start + CHUNK]
            self.position += len(x)
            probs = softmax(predict_logits(model, x), temperature)
            if self.passive:
                chosen = np.flatnonzero(self.rng.random(len(x)) < 0.5)
                audited = np.zeros(len(x), bool)
            else:
                audited = (probs.max(axis=1) >= tau) & (self.rng.random(len(x)) < AUDIT)
                chosen = np.flatnonzero((probs.max(axis=1) < tau) | audited)
            chosen = chosen[: labels - sent]
            seen += len(x)
            if len(chosen):
                samples = [grey_sample(DEVICE, x[i], probs[i], self.deployed.name, version) for i in chosen]
                for i, s in zip(chosen, samples):
                    self.oracle[s.sample_id] = int(y[i])
                self.device.submit_until_replied(make_request(DEVICE, samples, m=M))
                sent += len(samples)
                audits += int(audited[chosen].sum())
        return {"stream_frames": seen, "sent_to_people": sent, "audits": audits}


def load_compiled(work: Path, compiled_dir: Path | None) -> tuple[DeployedModel, dict[str, Any]]:
    """Compile the clean H-CNN as `make demo` does (its search settings, phone profile), or reuse a compile dir."""
    settings = with_preset(demo_config(dataset=ORIGINAL, device="phone", engines=("litert",), out=str(work)),
                           "fashion-mnist")
    if compiled_dir is None:
        compiled: Any = compile_stage(settings, ORIGINAL, work, log=lambda message: print(message, flush=True))
    else:
        summary = json.loads((compiled_dir / "summary.json").read_text())
        summary["bundle"] = {k: str(Path(v).resolve()) if k != "messages" else v for k, v in summary["bundle"].items()}
        compiled = SimpleNamespace(summary=summary, out=compiled_dir.resolve())
    data = load_dataset(ORIGINAL, seed=settings.seed, limit=settings.limit)
    final = compiled.summary["final"]
    assert settings.demands is not None
    return deploy_compiled(compiled, data), {
        "plan": compiled.summary["plan"], "accuracy_demand": settings.demands.accuracy,
        "labour_demand": settings.demands.labour, "accuracy_model_only_clean_test": final["accuracy_model_only"],
        "accuracy_fused_clean_test": final["accuracy"], "search_seconds": compiled.summary.get("search_seconds"),
        "compiled": "in this run" if compiled_dir is None else f"reused from {compiled_dir} (same settings)"}


def hub_section(deployed: DeployedModel, store: Path, threshold: int, demands: dict[str, Any],
                audit_share: float) -> dict[str, Any]:
    section = retrain_section(deployed, store, devices={DEVICE: "x86_64"}, threshold=threshold, dataset=ORIGINAL,
                              original_samples=20000, human_repeat=10, epochs=2, min_holdout=10, tolerance=0.005,
                              field={"audit_share": audit_share, "min_samples": 30})
    section["models"][0]["accuracy_demand"] = demands["accuracy_demand"]
    section["models"][0]["labour_demand"] = demands["labour_demand"]
    return section


def loop(deployed: DeployedModel, stream: Split, held: Split, rounds: int, threshold: int, demands: dict[str, Any],
         work: Path, passive: bool) -> list[dict[str, Any]]:
    """One closed loop on a fresh hub: round 0 is the deployed model, then one retrain per `threshold` labels."""
    work.mkdir(parents=True)
    section = hub_section(deployed, work / "models", threshold, demands, 1.0 if passive else AUDIT)
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": f"sqlite:///{work / 'hub.db'}"},
                               "grpc": {"port": free_port()}, "retrain": section})
    app = HubApp(config).start()
    device = Stream(app, stream, deployed, passive, seed=1)
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(M, ACCURACY, 10, seed=7),
                        lambda sample_id: device.oracle[sample_id]).start()
    rows: list[dict[str, Any]] = []
    tag = "passive" if passive else "active"
    try:
        current = app.retrain.pipeline.current(deployed.name)
        rows.append({"round": 0, "labels": 0, "model_version": current.version, "status": "deployed",
                     **evaluate(load_model_file(current.keras_path), current.temperature, current.tau, held, 0),
                     "labour_demand": demands["labour_demand"]})
        last_run = 0
        for r in range(1, rounds + 1):
            sent = device.send_until(threshold, current.version, current.keras_path, current.temperature, current.tau)
            finished = app.retrain.wait_for_run(deployed.name, last_run, timeout=1800)
            last_run = finished.id
            current = app.retrain.pipeline.current(deployed.name)
            measured = evaluate(load_model_file(current.keras_path), current.temperature, current.tau, held, r)
            field = finished.metrics.get("field", {})
            acceptance = finished.metrics.get("acceptance", {})
            rows.append({"round": r, "labels": r * threshold, "model_version": current.version,
                         "status": finished.status, **measured, "labour_demand": demands["labour_demand"], **sent,
                         "filtered_out": finished.filtered_out, "retrain_seconds": finished.seconds or 0.0,
                         "field_samples": field.get("samples"), "expected_labour": field.get("expected_labour"),
                         "expected_fused": field.get("expected_fused"),
                         "clean_test_new": acceptance.get("new_test"), "why": finished.error or ""})
            print(f"{tag} round {r}: {finished.status} v{current.version} acc {measured['accuracy_model_only']:.4f} "
                  f"fused {measured['accuracy_fused']:.4f} share {measured['share_to_people']:.3f} "
                  f"labour {measured['labour']:.4f} {finished.error or ''}", flush=True)
    finally:
        crowd.stop()
        device.device.close()
        app.stop()
    return rows


def oracle(deployed: DeployedModel, field_data: Any, held: Split, rounds: int, threshold: int,
           demands: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Upper bound: the same enhancement on 20,000 fully labelled field training images (true labels), the gate
    re-fitted on the field's validation split; measured once, reported on every round."""
    retrain: RetrainConfig = parse_hub_config(
        {"retrain": hub_section(deployed, work / "oracle", threshold, demands, 1.0)}).retrain.model_copy(
        update={"human_repeat": 1})  # 20,000 labelled field images weigh as much as the original ones
    labelled = field_data.train.take(ORACLE_SAMPLES)
    human = HumanSet(labelled.x, labelled.y, tuple(f"oracle-{i}" for i in range(len(labelled))))
    enhanced = enhance(deployed.keras_path, deployed.data, human, retrain)
    val = field_data.val
    chosen = refit(enhanced, FieldSet(val.x, val.y, np.ones(len(val), np.int64), M), retrain.field,
                   labour_demand=demands["labour_demand"], accuracy_floor=0.0, human_accuracy=retrain.human_accuracy)
    measured = evaluate(chosen.model, chosen.temperature, chosen.tau, held, 0)
    return [{"round": r, "labels": ORACLE_SAMPLES, **measured, "labour_demand": demands["labour_demand"]}
            for r in range(rounds + 1)]


def no_retrain(deployed: DeployedModel, held: Split, rounds: int, threshold: int,
               demands: dict[str, Any]) -> list[dict[str, Any]]:
    model = load_model_file(deployed.keras_path)
    return [{"round": r, "labels": r * threshold, **evaluate(model, deployed.temperature, deployed.tau, held, r),
             "labour_demand": demands["labour_demand"]} for r in range(rounds + 1)]


def scenario(name: str, spec: str, deployed: DeployedModel, demands: dict[str, Any], rounds: int, threshold: int,
             work: Path) -> dict[str, Any]:
    field_data = load_dataset(spec, seed=0)
    test = field_data.test
    held = Split(test.x[-HELD_OUT:], test.y[-HELD_OUT:])
    stream = Split(np.concatenate([field_data.val.x, test.x[:-HELD_OUT]]),
                   np.concatenate([field_data.val.y, test.y[:-HELD_OUT]]))
    print(f"== {name}: stream {len(stream)} frames, held-out {len(held)}", flush=True)
    active = loop(deployed, stream, held, rounds, threshold, demands, work / f"{spec}-active", passive=False)
    passive = loop(deployed, stream, held, rounds, threshold, demands, work / f"{spec}-passive", passive=True)
    return {"name": name, "field": spec, "stream_size": len(stream), "held_out_size": len(held), "rounds": active,
            "baselines": {"no_retrain": no_retrain(deployed, held, rounds, threshold, demands), "passive": passive,
                          "oracle": oracle(deployed, field_data, held, rounds, threshold, demands, work)},
            "targets": targets(active, passive)}


def targets(active: list[dict[str, Any]], passive: list[dict[str, Any]]) -> dict[str, bool]:
    """The issue's targets after the last round, each reached or not."""
    first, last = active[0], active[-1]
    return {
        "model_only_plus_10_points": last["accuracy_model_only"] >= first["accuracy_model_only"] + 0.10,
        "model_only_above_passive": last["accuracy_model_only"] > passive[-1]["accuracy_model_only"],
        "share_down_30_percent": last["share_to_people"] <= 0.7 * first["share_to_people"],
        "fused_never_below_round_0": all(r["accuracy_fused"] >= first["accuracy_fused"] for r in active),
        "labour_within_demand_every_round": all(r["labour"] <= r["labour_demand"] for r in active),
        "labour_within_demand_after_round_0": all(r["labour"] <= r["labour_demand"] for r in active[1:]),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = result["scenarios"]
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.0 * len(scenarios), 4.4), squeeze=False)
    for left, sc in zip(axes[0], scenarios):
        right = left.twinx()
        lines = [("closed loop", sc["rounds"], "-", 2.0)] + [
            (name.replace("_", " "), rows, style, 1.2)
            for name, rows, style in (("no_retrain", sc["baselines"]["no_retrain"], ":"),
                                      ("passive", sc["baselines"]["passive"], "--"),
                                      ("oracle", sc["baselines"]["oracle"], "-."))]
        for label, rows, style, width in lines:
            x = [r["round"] for r in rows]
            left.plot(x, [r["accuracy_model_only"] for r in rows], style, color="tab:blue", lw=width,
                      marker="o" if label == "closed loop" else None, label=f"model only, {label}")
            left.plot(x, [r["accuracy_fused"] for r in rows], style, color="tab:green", lw=width,
                      marker="s" if label == "closed loop" else None, label=f"fused, {label}")
            if label != "oracle":
                right.plot(x, [r["share_to_people"] for r in rows], style, color="tab:red", lw=width,
                           marker="d" if label == "closed loop" else None, label=f"share to people, {label}")
        left.set_xlabel(f"round (x {result['threshold']} human labels; 0 = deployed)")
        left.set_ylabel("accuracy on held-out field images")
        right.set_ylabel("share of frames sent to people")
        right.set_ylim(0, max(0.6, right.get_ylim()[1]))
        left.set_title(f"{sc['name']} (SIMULATED annotators)", fontsize=10)
        handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        left.legend(handles, [h.get_label() for h in handles], fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict[str, Any], wall: float) -> str:
    m = machine()
    columns = ["round", "labels", "model_version", "status", "accuracy_model_only", "accuracy_fused",
               "share_to_people", "labour", "labour_demand", "tau", "temperature", "sent_to_people", "audits",
               "stream_frames", "filtered_out", "expected_labour", "clean_test_new", "retrain_seconds", "why"]
    base_columns = ["round", "labels", "model_version", "status", "accuracy_model_only", "accuracy_fused",
                    "share_to_people", "labour", "tau", "why"]
    d = result["deployed"]
    out = [
        "# Field shift: the closed loop learns a field unlike its training data — annotators SIMULATED", "",
        f"Measured on {m['cpu']} ({m['cores']} cores, no GPU, shared with other jobs), one run per scenario (no "
        f"repeats, so no medians), total wall time {wall:.0f} s. Deployed model: hgen-compile's H-CNN compiled on "
        f"clean FashionMNIST (D3) for the phone profile with the demo's search settings, compiled {d['compiled']} "
        f"(plan "
        f"{d['plan']}; tau "
        f"{result['tau']:.3f}, temperature {result['temperature']:.3f}; on the clean test split model-only "
        f"{d['accuracy_model_only_clean_test']:.4f}, fused {d['accuracy_fused_clean_test']:.4f}); demands A >= "
        f"{d['accuracy_demand']}, L <= {d['labour_demand']}.", "",
        "How the data was made: the field is the same FashionMNIST test and validation images under a challenge the "
        "model never saw (`fashion-mnist:noise`, Gaussian variance 0.2; `fashion-mnist:lowres`, factor 2), fixed "
        "by seed 0. The device (hgen.hub.testing.device.GrpcDevice over real gRPC; not the edge agent process) "
        "streams the field validation images then the field test images except the last 2,000 (cycled like a "
        f"camera), runs the current model, and sends frames under tau plus {AUDIT:.0%} of the confident ones "
        "(the agent's audit draw); the hub (in-process, SQLite, real gRPC) gets SIMULATED answers (m=3, accuracy "
        f"0.9) through its annotator API, retrains every {result['threshold']} human labels, re-fits temperature "
        "and tau on the held-out field labels (`retrain.field`), checks, re-lowers (LiteRT), signs and publishes; "
        "the device then runs the published version. Every accuracy, share and labour (Eq. 13) is measured on the "
        "last 2,000 field test images, never streamed nor trained on, with SIMULATED people at the deployed tau "
        "(share_to_people counts the gate only: the audit adds about "
        f"{AUDIT:.0%} of the confident frames on the device). The passive baseline runs the same hub code with a "
        "device that sends randomly chosen frames (same label counts); no_retrain is the deployed model; oracle is "
        f"the same enhancement code run offline on {ORACLE_SAMPLES} fully labelled field training images, its gate "
        "re-fitted on the 5,000 field validation images (the same value every round).", "",
        "## Targets after the last round", "",
        "| scenario | " + " | ".join(result["scenarios"][0]["targets"]) + " |",
        "|---|" + "---|" * len(result["scenarios"][0]["targets"]),
        *[f"| {sc['name']} | " + " | ".join("reached" if v else "NOT reached" for v in sc["targets"].values()) + " |"
          for sc in result["scenarios"]], "",
        *result.get("reading", []), ""]
    for sc in result["scenarios"]:
        out += [f"## {sc['name']}: closed loop (active)", "", markdown_table(sc["rounds"], columns), ""]
        for name in ("passive", "no_retrain", "oracle"):
            out += [f"### baseline: {name}", "", markdown_table(sc["baselines"][name], base_columns), ""]
    out += ["![field shift](field_shift.png)", ""]
    return "\n".join(out)


def reading(result: dict[str, Any]) -> list[str]:
    """What the numbers say, per scenario, and which pipeline decisions mattered (measured here and in the probe)."""
    lines = ["## Reading", ""]
    for sc in result["scenarios"]:
        rows, base = sc["rounds"], sc["baselines"]
        first, last = rows[0], rows[-1]
        published = sum(r["status"] == "published" for r in rows[1:])
        lines.append(
            f"- {sc['name']}: {published} of {len(rows) - 1} retrains published; after {last['labels']} human labels "
            f"model-only {first['accuracy_model_only']:.4f} -> {last['accuracy_model_only']:.4f} (passive "
            f"{base['passive'][-1]['accuracy_model_only']:.4f}, oracle {base['oracle'][-1]['accuracy_model_only']:.4f}"
            f"), fused {first['accuracy_fused']:.4f} -> {last['accuracy_fused']:.4f} (lowest "
            f"{min(r['accuracy_fused'] for r in rows):.4f}), share to people {first['share_to_people']:.4f} -> "
            f"{last['share_to_people']:.4f}, labour {first['labour']:.4f} -> {last['labour']:.4f} (demand "
            f"{last['labour_demand']}).")
    gaps = ", ".join(f"{(sc['rounds'][-1]['accuracy_model_only'] - passive[-1]['accuracy_model_only']) * 100:+.1f}"
                     for sc in result["scenarios"] for passive in [sc["baselines"]["passive"]])
    lines.append(f"- Closed loop minus passive, model-only after the last round: {gaps} points here; -0.2 and -0.9 in "
                 "the first run (commit b3fa9ce). An accuracy on 2,000 images has a standard error of ~0.9 points, so "
                 "the 'above passive' target is met in this run but not shown to hold: labelling the frames the gate "
                 "sends teaches this model about as much as labelling random field frames.")
    return lines + ["", *DECISIONS]


DECISIONS = [
    "Decisions (issue 18's list; `retrain.field` in docs/configuration.md):",
    "- Autoencoder filter (mattered most for noise): fitted on the clean training images, it left out every noisy "
    "field image (500 of 500 D4 test images above its 0.99-quantile threshold; 0 of 500 D5 ones), so a noise field "
    "could never be learned. Now, when the median error of the labelled batch is above the threshold (the field "
    "itself shifted), only samples above 3x that median are left out (blank frames, glare); in distribution the "
    "threshold is unchanged (unit test).",
    "- Temperature and tau re-fitted on held-out field labels for the labour demand (mattered for share, labour "
    "and fused): keeping the clean tau and temperature, the offline probe's (a script, not committed: the same "
    "model and retrain code without the hub, labels true with 3 % flipped, 10 % audits) model-only gain was the "
    "same but the "
    "gate sent ever fewer frames (noise: share 0.26 -> 0.02 after 5 rounds) and fused accuracy fell round after "
    "round (0.78 -> 0.74); a tau re-chosen as the most accurate one within the labour demand (the compile's rule) "
    "spends the labour where it helps.",
    "- An audited share of confident frames (here 5 %; the agent's gating.audit_share): each counts 1/0.05 in the "
    "field estimates, recognised by its confidence at or above the sending version's tau; tau is aimed at 0.9 of "
    "the labour demand, its candidates halfway between neighbouring confidences. This is the weak point: the "
    "held-out fifth of a few hundred labels holds only 5-20 audited frames, each standing for ~5 % of the stream, "
    "so the field's share below a tau is estimated to +-10-15 points. Measured labour vs the estimate per round: "
    "D4 0.050/0.045, 0.055/0.032, 0.051/0.039; D5 0.020/0.042, 0.096/0.042, 0.088/0.044 (after a version that "
    "sent 6 % of frames, most labels were audits and tau jumped to 0.875). The first run of this benchmark "
    "(commit b3fa9ce, tau at a sample's confidence) overshot on noise instead (0.053-0.062 measured, 0.022-0.044 "
    "expected; after 5 rounds D4 model-only 0.742, share 0.199; D5 model-only 0.799, fused 0.842, share 0.118, "
    "labour 0.037). More audits (a larger share, or counting the audited frames of the training part too) would "
    "tighten it; not tried for lack of time.",
    "- Acceptance judged on the field: held-out human labels (already field labels) as before; the expected "
    "accuracy with people is estimated on the weighted held-out field labels, the deployed model re-gated for the "
    "same labour demand (the deployed gate may spend far more than the demand in a shifted field, and a retrain "
    "that brings labour within the demand was otherwise refused); the clean test split may lose up to 0.02 for "
    "at least as much gained on held-out field labels.",
    "- Human labels vs original data and layers: left at the closed-loop benchmark's settings (20,000 original "
    "images with the teacher's logits, each human label x10, all layers fine-tuned from the deployed weights, 2 "
    "epochs). In the offline probe, weighting the field as much as all original data (4,000 original, labels "
    "repeated to match) or hard labels with a higher learning rate gained no more model-only accuracy than "
    "this (noise: 0.73 vs 0.70-0.73 after 5 rounds); layer freezing was not tried.",
    "- Pseudo-labels from confident field frames: not done. The hub only receives frames sent to people; confident "
    "frames never leave the device, so self-training would need devices to upload unlabelled frames.",
]


def run(rounds: int, threshold: int, work: Path, compiled_dir: Path | None, names: list[str]) -> dict[str, Any]:
    deployed, demands = load_compiled(work / "compile", compiled_dir)
    scenarios = [scenario(name, SCENARIOS[name], deployed, demands, rounds, threshold, work) for name in names]
    return {"original": "fashion-mnist (D3)", "annotators": f"SIMULATED, m={M}, accuracy {ACCURACY}",
            "threshold": threshold, "audit_share": AUDIT, "tau": deployed.tau, "temperature": deployed.temperature,
            "deployed": demands, "scenarios": scenarios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=200)
    parser.add_argument("--compiled", type=Path, default=None,
                        help="reuse an hgen-compile output directory of the clean model instead of compiling")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenario names")
    parser.add_argument("--out", default="field_shift", help="results name (tools/bench/results/NAME.*)")
    parser.add_argument("--render", action="store_true", help="only re-write the MD and PNG from NAME.json")
    args = parser.parse_args()
    if args.render:
        result = json.loads((RESULTS / f"{args.out}.json").read_text())
        for sc in result["scenarios"]:  # a first run wrote the oracle's label count as text
            for row in sc["baselines"]["oracle"]:
                row["labels"] = ORACLE_SAMPLES
        result["reading"] = reading(result)
        plot(result, RESULTS / f"{args.out}.png")
        write_results(args.out, result, markdown(result, result["wall_seconds"]))
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hgen-field-shift-") as tmp:
        result = run(args.rounds, args.threshold, Path(tmp), args.compiled, args.scenarios.split(","))
    wall = time.perf_counter() - start
    result["wall_seconds"] = wall
    result["reading"] = reading(result)
    plot(result, RESULTS / f"{args.out}.png")
    json_path, md_path = write_results(args.out, result, markdown(result, wall))
    print(f"wrote {json_path}, {md_path}, {RESULTS / (args.out + '.png')} in {wall:.0f} s")


if __name__ == "__main__":
    main()
