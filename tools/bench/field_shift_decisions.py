"""The field-shift report's decisions (issue 18's list): what was decided and what it changed, in this run, the
previous ones and the offline probes; field_shift_report.reading() appends them after the numbers."""

from __future__ import annotations

import json
from typing import Any

from benchlib import RESULTS
from field_shift_report import _runs_of, _setting, refusals


# One-shot offline probe (build/, not committed): D3 -> D4, the deployed model, 1,000 labels at once from the field
# validation images (active: the first 950 under the deployed tau plus 50 random confident ones; passive: 1,000
# random), labels true with 3 % flipped, the benchmark's enhancement otherwise; model-only on the held-out 2,000.
PROBE = [("all layers, alpha 0.7 (the hub's default)", 0.7295, 0.7500),
         ("conv layers frozen", 0.7290, 0.7390),
         ("4,000 original images instead of 20,000 (the field weighs 5x more)", 0.7260, 0.7255),
         ("labels resampled class-balanced", 0.7135, 0.7310),
         ("alpha 0.2 (the hard-label term weighs more)", 0.7420, 0.7345),
         ("alpha 0.2, class-balanced", 0.7290, 0.7435),
         ("alpha 0.2, learning rate 1e-3", 0.7355, 0.7375)]


def probe_table() -> list[str]:
    rows = [f"| {name} | {active:.4f} | {passive:.4f} | {(active - passive) * 100:+.1f} |"
            for name, active, passive in PROBE]
    return ["| recipe | active (uncertain frames) | passive (random frames) | active - passive, points |",
            "|---|---|---|---|", *rows]


def round0(result: dict[str, Any]) -> str:
    """Round 0 of each scenario: what the gate wants, what the device sends, and fused accuracy both ways."""
    parts = []
    for sc in result["scenarios"]:
        first = sc["rounds"][0]
        parts.append(f"{sc['name']}: gate labour {first['gate_labour']:.3f}, sent {first['labour']:.3f}, fused "
                     f"{first['accuracy_fused']:.3f} (the gate alone {first['gate_accuracy_fused']:.3f})")
    return "; ".join(parts)


def acceptance_bullet(result: dict[str, Any]) -> str:
    """What the acceptance check's noise margin decided (issue 18's 'acceptance check judged on held-out field
    labels'), with the runs before it for comparison."""
    margin = _setting(result, "noise_se")
    active, passive, total = refusals(result)
    return ("- The acceptance check judges beyond the noise of its held-out labels (`retrain.noise_se`, "
            f"{'not recorded' if margin is None else f'{margin:g} standard error'} in this run; decides 'above "
            "passive' and '+10 points' through how many retrains are published): a new model is refused only when "
            "it falls short by more than that many standard errors of the paired difference, on the held-out human "
            "labels and, weighted like the field, on the expected fused accuracy at the labour demand (the "
            "tolerance 0.005 still applies when larger). Before it (33ceafa and its repeats, 50 retrains each way "
            "over the four issue scenarios) 18 closed-loop and 12 passive retrains were refused, most by one or two "
            "held-out frames (0.8274 -> 0.8223 is 1 of 197), and three of the closed loop's four worst gaps to "
            "passive ended on a refused last round. With the margin alone (c375cc4, the device still asking about "
            "every unfamiliar frame) 7 and 5 of 50 were refused; closed loop minus passive: D4 +0.7, D5 +1.6, "
            "class hues under low light -1.7, -2.4, +0.3 and under noise -2.0, -0.9, -1.5 (seeds 0, 1, 2). In this "
            f"run and its repeats: {active} closed-loop and {passive} passive retrains refused of {total} each.")


def familiarity_bullet(result: dict[str, Any]) -> str:
    """What the familiarity check did in this run: round 0 and the last round, per scenario deployed with it."""
    parts = []
    for sc in result["scenarios"]:
        first, last = sc["rounds"][0], sc["rounds"][-1]
        if first.get("unfamiliar_share") is None:
            continue
        without = sc.get("round0_without_check")
        plain = (f"without the check {without['accuracy_fused']:.3f}, share under tau "
                 f"{without['gate_share_to_people']:.3f}" if without else "without the check: not measured for "
                 "this compile")
        parts.append(f"{sc['name']}: unfamiliar {first['unfamiliar_share']:.3f} of the held-out field at round 0, "
                     f"{last['unfamiliar_share']:.3f} after round {last['round']}; share to people (the gate's) "
                     f"{first['gate_share_to_people']:.3f} -> {last['gate_share_to_people']:.3f}; fused at round 0 "
                     f"{first['accuracy_fused']:.3f} ({plain})")
    share = _setting(result, "unfamiliar_share")
    drawn = "every" if share in (None, 1.0) else f"a drawn {share:g} of the confident"
    return ("- The familiarity check (decides 'share down 30 %'; `hgen.runtime.familiarity`, on by default in "
            "hgen-compile at `familiarity_quantile` 0.001; a reused compile that predates it gets the ranges fitted "
            "on its own training images, as the deployed line says). Without it (the run at 2d23950) the share "
            "under tau ROSE on both class-hue fields (low light 0.0275 -> 0.139, noise 0.084 -> 0.1275): the "
            "deployed gate was confident on fields where it was wrong (round-0 gate labour 0.009 and 0.026 against "
            "the demand 0.05), so it asked fewer people than the demand allows. In this run the device sends every "
            f"frame under tau and {drawn} frames unlike the training images (`gate.unfamiliar_share`), within its "
            "labour limit; the hub weights each of those held-out labels by 1 / that share, as it weights an audit, "
            "and a published retrain widens the ranges by the field frames it learned, so from then on the "
            "model's confidence decides there. In the previous run (33ceafa) the device asked about every "
            "unfamiliar frame: where the labour demand binds at round 0 that spent it in stream order rather than on "
            "the least confident frames (D5 fused 0.7425 against 0.7945 without the check), made the round-0 share "
            "1 wherever the field is new (so 'share down 30 %' was met by construction), and bought little fused "
            "accuracy (D4: people asked about every held-out frame gave 0.647 against 0.580 model-only, as H-CNN's "
            "fusion keeps a confident model's answer over people's on most of them). A "
            "reserve that let frames under tau go first without weights was measured and reverted (e1d6b68): the "
            "hub's held-out set was then unsure frames only, each counted once, from which D5's first re-fit chose "
            "a tau asking 3.6 % of frames. Per scenario: "
            + "; ".join(parts) + ".")


STYLE_PROBE = "style_probe"
# The last run before the field's style (98ebbb1's code, run at 88ab09a): model-only after 1,000 labels, closed loop
# and passive, per scenario, for the comparison in the style bullet.
BEFORE_STYLE = {"D3 -> D4 (noise)": (0.7605, 0.7430), "D3 -> D5 (low resolution)": (0.8285, 0.8155),
                "colour folder (class hues): clean -> low light": (0.7425, 0.7510),
                "colour folder (class hues): clean -> noise": (0.6435, 0.6515)}


def style_bullet(result: dict[str, Any]) -> str:
    """What rendering the originals in the field's style did: this run against the one before it, and the probe."""
    share = _setting(result, "style_share")
    if not share:
        return ("- The field's style on the original images (`retrain.field.style_share`): off or not recorded in "
                "this run.")
    parts = []
    for sc in result["scenarios"]:
        if sc["name"] not in BEFORE_STYLE or "settings" not in sc:
            continue
        active, passive = BEFORE_STYLE[sc["name"]]
        first, last = sc["rounds"][0], sc["rounds"][-1]
        parts.append(f"{sc['name']}: closed loop {first['accuracy_model_only']:.4f} -> "
                     f"{last['accuracy_model_only']:.4f} (before {active:.4f}), passive "
                     f"{sc['baselines']['passive'][-1]['accuracy_model_only']:.4f} (before {passive:.4f}), oracle "
                     f"{sc['baselines']['oracle'][-1]['accuracy_model_only']:.4f}")
    path = RESULTS / f"{STYLE_PROBE}.json"
    probe = ""
    if path.is_file():
        cells = [f"{row['field']} share {row['style_share']:g}: field {row['active_field']:.3f} active / "
                 f"{row['passive_field']:.3f} passive, clean test {row['active_clean_test']:.3f} / "
                 f"{row['passive_clean_test']:.3f}" for row in json.loads(path.read_text())["summary"]]
        probe = (f" The offline probe ([{STYLE_PROBE}.md]({STYLE_PROBE}.md), one retrain of 800 SIMULATED labels "
                 "on the class-hue model, means of 2 seeds): " + "; ".join(cells) + ". Rendering all originals "
                 "learns the field most but costs the clean test split 4-13 points, more than the acceptance "
                 "check's trade (0.02) allows; half keeps it within about a point in one retrain.")
    return ("- The field's style on the original images (decides '+10 points'; `retrain.field.style_share` "
            f"{share:g}, hub/retrain/style.py): before each retrain the hub estimates, from the human-labelled "
            "field images against the originals, the sensor noise the field adds (Immerkaer's estimate) and a "
            "tone curve per channel (quantile matching), and renders that share of the 20,000 original images "
            "through both; they keep their true labels and the teacher's targets of the clean image. A few "
            "hundred labels cannot show the model every class under the field's conditions; the originals "
            "can. Photometric only: D5's lower resolution is not modelled (no noise added, a near-identity "
            "curve). The hub renders only when at least half of the labelled field images are outside the "
            "originals' familiarity ranges (since 8d1b653: a field like the training data is left as it is; `make "
            "demo-same-field`'s in-distribution retrain renders nothing): on these fields 99.8-100 % of the field "
            "images are. This run against the run at 88ab09a, before the field's style (same seeds and settings "
            "otherwise): "
            + "; ".join(parts) + "." + probe + " Its price: retrains starting from a model that already lost "
            "some clean accuracy lose more, so more are refused by the original test split's check: in this run "
            "and its repeats " + clean_refusals(result) + ", against 9 closed-loop and 5 passive refusals for any "
            "reason in the run at 88ab09a. An offline probe (not committed: 4 chained retrains of 160 more random "
            "SIMULATED labels each on the class-hue low-light field) with the originals' soft targets from the "
            "first model instead of the current one kept the clean test split at 0.847-0.849 (0.824 after the "
            "4th without it) for about 1 point less on the field (0.8105 vs 0.8195); not built.")


def clean_refusals(result: dict[str, Any]) -> str:
    """Refusals by the original test split alone (its fall or its drift), closed loop and passive, over every run."""
    counts = {"rounds": 0, "passive": 0}
    for sc in result["scenarios"]:
        if "settings" not in sc:
            continue
        for run in _runs_of(result, sc["name"]):
            for key in counts:
                counts[key] += sum(r.get("status") == "rejected" and "original test" in r.get("why", "")
                                   and "held-out" not in r.get("why", "") and "expected fused" not in r.get("why", "")
                                   for r in run[key][1:])
    return (f"{counts['rounds']} closed-loop and {counts['passive']} passive retrains were refused by the original "
            "test split alone")


def decisions(result: dict[str, Any]) -> list[str]:
    """Issue 18's list: what was decided, what it changed (this run, the previous ones, the offline probe)."""
    gate_after = ", ".join(f"{max(r['gate_labour'] for r in sc['rounds'][1:]):.3f}" for sc in result["scenarios"])
    audit = "" if result["audit_share"] == 0.05 else f", with audit share {result['audit_share']}"
    return [
        "Decisions (issue 18's list; `retrain.field` in docs/configuration.md):",
        style_bullet(result),
        familiarity_bullet(result),
        acceptance_bullet(result),
        "- The device enforces the labour demand, and is measured as it behaves (since the run after 29e2e41; "
        "decides 'labour within the demand in every round' and 'fused never below round 0'): `make demo` "
        "configures the agent with `batching.labour_share` = the compile's labour demand; the agent's bucket sends "
        f"what fits and the rest keep the model's answer. Round 0 as delivered: {round0(result)}. `gate_*` are "
        "what the gate alone wants (every frame under tau, and the drawn unfamiliar ones), and whether the gate alone needs no more "
        "than the demand after round 0 is a target of its own.",
        "- tau's labour judged by its one-sided upper bound (`retrain.field.labour_confidence` 0.8): the held-out "
        "labels hold a few audited frames, each standing for 20, so the field share below a tau is estimated to "
        "+-10-15 points; chosen at the estimate, tau overshot (D5 0.096 and 0.088 vs 0.05 at 29e2e41). Highest "
        f"gate labour after round 0 here: {gate_after} (scenario order{audit}). Before the familiarity check, D5's "
        "rounds 1-2 were still over (0.059, 0.055): round 0's limit had held back most frames the gate wanted, so "
        "the first 200 labels held 9 audits; with the check, round 0's labels are frames under tau and drawn "
        "unfamiliar ones, the latter weighted 1 / the draw's share, so they stand for the whole field. The price of the bound: while few labels are in it, it "
        "picks a low tau.",
        *audit_experiment(result),
        "- Human labels vs original data, and layers (decides 'above passive'): 20,000 original images with the "
        "teacher's logits, each human label x10, all layers fine-tuned from the deployed weights for 2 epochs, "
        "the soft-target weight alpha 0.2 instead of the hub's 0.7 (this benchmark's setting, not a new default): "
        "at distillation temperature 8 a human label lifted 6 logits above the top one barely moves the soft "
        "target, so the hard term carries it. The offline probe below (one seed each, standard error ~1 point per "
        "cell) found no recipe that makes uncertain frames reliably teach more than random ones; alpha 0.2 was "
        "the only one with active ahead, by less than 1 point. Layer freezing and class-balanced resampling did "
        "not help. Closed loop minus passive, model-only after 1,000 labels, in the runs before the familiarity "
        "check: D4 +1.7, -0.2 (audit 0.1), +1.1 and -0.2 (alpha 0.7); D5 +0.4, +0.5, +0.4, -0.9; the class-hue "
        "folder under low light -1.8, +0.6, -1.8, under noise +3.0; this run and its repeats: the Repeats table "
        "above. Labelling the frames the gate sends teaches this model about as much as labelling random field "
        "frames; before the field's style both ended a few points below the oracle (all field images labelled).",
        "",
        *probe_table(),
        "",
        *label_value_bullet(result),
        "- Kept from the previous run: the autoencoder filter leaves out only samples above 3x the batch median "
        "when the field itself shifted (fitted on clean images it left out every noisy frame); temperature and tau "
        "re-fitted on held-out field labels, audited frames weighted 1 / 0.05; the acceptance check judges expected "
        "fused accuracy on the weighted held-out field labels with the deployed model re-gated for the same labour "
        "demand, and lets the clean test split lose up to 0.02 for at least as much gained on the field.",
        "- Pseudo-labels from confident field frames: measured offline, not built into the pipeline, because they "
        "hurt ([pseudo_probe.md](pseudo_probe.md): D3 -> D4, one retrain of 1,000 SIMULATED labels plus 3,000 "
        "confident field frames with the deployed model's own answers): active 0.739 -> 0.601 with them, passive "
        "0.730 -> 0.661, pseudo-labels alone 0.357 -> 0.337. A shifted field makes this model confidently wrong "
        "(1.5 % of noisy frames under tau, and the confident ones 37 % right), so its confident answers teach its "
        "errors. The device would also have to upload unlabelled frames, which it does not (it sends only frames "
        "for people and audits). That probe's deployed model is today's D3 compile (the warm start now keeps every "
        "layer; 0.357 on the noisy held-out set), not this run's (0.599).",
        "- Targets: the share target is judged on the gate's share (frames under tau and the drawn unfamiliar "
        "ones; the device's sent share is capped by the demand from round 0 on, so it cannot fall 30 %); fused "
        "accuracy and labour as the device delivers them. Where the accuracy demand stays out of reach (D4, A >= "
        "0.86: the oracle's fused accuracy 0.842 at 88ab09a), the hub's re-fit spends the labour demand on "
        "accuracy (the most accurate tau within it, the compile's rule), so the share settles near what the "
        "demand allows (about 0.14-0.19 of frames) rather than falling further; whether that is 30 % below "
        "round 0 depends on round 0 (D4 seed 0: 0.228 -> 0.192 before the field's style, 0.228 -> 0.137 with "
        "it). With every unfamiliar frame asked at round 0 (33ceafa) that target was met by construction. "
        "'Above passive by 1 SE' adds the held-out set's standard error "
        "(sqrt(p(1-p)/2000), ~0.9 points) to the issue's 'above passive'.",
        "- Colour scenario: lenet5 compiled with the demo's search settings but 30 backbone / 6 final epochs (the "
        "own-data preset's 10 / 3 left it at 0.32 model-only on the clean folder; 30 / 6 reached 0.35). The model "
        "is too weak for this data (tinted garments on textured colour backgrounds at 32x32), and 1,000 low-light "
        "labels do not teach it: read that scenario as the loop staying safe on a model that cannot learn the "
        "field, not as learning.",
        "- Colour scenario with class hues: the same recipe with the tint's hue set by the class, so colour carries "
        "the class as a camera's scene often does (a uniform, a product's packaging) and lenet5 learns the clean "
        "folder; low light (gamma 2.5) darkens and desaturates the tints, noise (variance 0.2) is D4's. Earlier "
        "runs: at the own-data preset's demand A >= 0.5 (e040329) tau 0.163 asked nobody, in the clean data or "
        "the field, so round 0's share was 0 and could not fall (model-only 0.4835 -> 0.675); at A >= 0.83 "
        "(b98a131, and 2d23950 with the same held-out crowd every round) the share rose, as the familiarity "
        "bullet says. Before the field's style (88ab09a) the accuracy demand (0.83) stayed out of reach on these "
        "fields (fused after 1,000 labels 0.804 and 0.695), so the hub's re-fit kept spending the labour demand on "
        "accuracy; in this run: " + demand_reach(result) + ".",
        "- The oracle is one retrain (2 epochs) on every labelled field training image (up to 20,000, each once) "
        "beside the same original images; the closed loop retrains five times, each from the last. With the "
        "field's style the original images carry most of what the field needs, so five retrains can end above "
        "that one (" + above_oracle(result) + "): read the oracle as 'one retrain on every field label', not as "
        "an upper bound.",
    ]


def demand_reach(result: dict[str, Any]) -> str:
    """Per scenario: fused accuracy on the device after the last round against the accuracy demand."""
    parts = []
    for sc in result["scenarios"]:
        if "settings" not in sc:
            continue
        fused, demand = sc["rounds"][-1]["accuracy_fused"], sc["deployed"].get("accuracy_demand")
        met = "" if demand is None else (" (the demand A >= " + f"{demand:g} " + ("met" if fused >= demand
                                                                                  else "NOT met") + ")")
        parts.append(f"{sc['name']} fused {fused:.3f}{met}")
    return "; ".join(parts)


def above_oracle(result: dict[str, Any]) -> str:
    parts = [f"{sc['name']}: {sc['rounds'][-1]['accuracy_model_only']:.4f} vs the oracle's "
             f"{sc['baselines']['oracle'][-1]['accuracy_model_only']:.4f}" for sc in result["scenarios"]
             if "settings" in sc]
    return "; ".join(parts)


AUDIT_EXPERIMENT = "field_shift_audit10"


def audit_experiment(result: dict[str, Any]) -> list[str]:
    """The same benchmark with twice the audits (`--audit 0.1`), summarised beside the main run's decisions."""
    path = RESULTS / f"{AUDIT_EXPERIMENT}.json"
    if not path.is_file():
        return []
    other = json.loads(path.read_text())
    if other["audit_share"] == result["audit_share"]:
        return []
    lines = []
    for sc in other["scenarios"]:
        rows, passive = sc["rounds"], sc["baselines"]["passive"]
        lines.append(
            f"{sc['name']}: gate labour after round 0 at most {max(r['gate_labour'] for r in rows[1:]):.3f}, "
            f"model-only {rows[0]['accuracy_model_only']:.3f} -> {rows[-1]['accuracy_model_only']:.3f} (passive "
            f"{passive[-1]['accuracy_model_only']:.3f}), fused {rows[0]['accuracy_fused']:.3f} -> "
            f"{rows[-1]['accuracy_fused']:.3f} (lowest {min(r['accuracy_fused'] for r in rows):.3f}), share under tau "
            f"{rows[0]['gate_share_to_people']:.3f} -> {rows[-1]['gate_share_to_people']:.3f}, targets not reached: "
            f"{', '.join(k for k, v in sc['targets'].items() if not v) or 'none'}")
    return [f"- More audits (`--audit {other['audit_share']}`, [{AUDIT_EXPERIMENT}.md]({AUDIT_EXPERIMENT}.md), "
            "run on the deployed model of the run at 29e2e41, before the familiarity check; audits were 15-40 % of "
            "the labels at 5 %): "
            + "; ".join(lines) + "."]


LABEL_VALUE = "label_value_probe"
FIELD_OF = {"fashion-mnist:noise": "D3 -> D4 (noise)", "fashion-mnist:lowres": "D3 -> D5 (low resolution)"}


def label_value_bullet(result: dict[str, Any]) -> list[str]:
    """What the labels teach beside the style, per field (the probe's means), where the deployed model's errors are,
    against what the loop's runs end at and the ceiling of 20,000 truly labelled field images."""
    path = RESULTS / f"{LABEL_VALUE}.json"
    if not path.is_file():
        return []
    probe = json.loads(path.read_text())
    parts = [label_value_of(result, probe, field, name) for field, name in FIELD_OF.items()]
    return [f"- What the labels teach beside the field's style (decides 'above passive'; [{LABEL_VALUE}.md]"
            f"({LABEL_VALUE}.md): one retrain of 800 SIMULATED labels per cell on a fresh D3 compile, means of 3 "
            "seeds, field accuracy on the held-out 2,000; the ceiling is the same retrain on the field's 20,000 "
            "truly labelled training images): " + "; ".join(p for p in parts if p)
            + ". Under D4's noise the clean model is confidently wrong: most of its errors are among frames it is sure "
            "of, piled on a few answers, so the frames it doubts are a small part of what it gets wrong, and labels "
            "of random frames correct the confident error where it is. The doubted frames are readable (the ceiling "
            "model gets most of them right), so it is where they are, not the frames themselves, nor the crowd's "
            "answers (true labels keep the gap), nor how they are weighted (importance weights, so the labels stand "
            "for the whole field, do not close it), nor the retrain's length (6 epochs instead of 2 leave passive on "
            "D4 where it is). Nor does a pick aimed at the confident errors beat random: the class-skew pick (frames "
            "of the answers given more often than the training classes occur) holds more of the model's errors than "
            "random frames and teaches no more. Nor do picks from the active-learning literature that aim at covering "
            "the field (diversity_picks.py): TypiClust (the most typical frame of each of 800 k-means clusters, on "
            "the pixels or on the model's last hidden layer), BADGE (doubt and diversity at once) and k-center greedy "
            "teach no more than random frames either: on D4 from 0.2 points above passive to 1.2 below, on D5 at "
            "most 0.6 above (inside the held-out set's standard error), and k-center, which picks the field's "
            "outliers, 5 below. Nor once the model has learned the field, as from round 1 of the loop: in the "
            "second round the frames the first retrained model doubts hold its errors (it is right on about a third "
            "of them) and teach what random frames teach, while people's answers on them correct far "
            "more of the model's outputs (the first model's right-rates above): the loop's labels are worth as much "
            "to the model and more to the field's outputs. In the loop, round 0 asks about drawn unfamiliar frames "
            "(every frame of a shifted field, so in effect random ones), and from round 1 on the gate is a model "
            "retrained and re-calibrated on field labels; it ends tied with passive on D4, close to the ceiling, "
            "with little left above passive for this lenet5 on D4 beyond the held-out set's standard error (~1 point). "
            "Two compiles of the same settings (CPU training is not bit-reproducible) move the probe's active minus "
            "passive by about a point (the probe's report sets them side by side)."]


def _gap(value: float, top: list[dict[str, Any]], epochs: int) -> str:
    """The ceiling's retrain of `epochs` epochs minus `value` ('' when that length was not run)."""
    row = next((r for r in top if r["epochs"] == epochs), None)
    return "" if row is None else f"{row['field_accuracy'] - value:+.3f}"


def label_value_of(result: dict[str, Any], probe: dict[str, Any], field: str, name: str) -> str:
    """One field's part of the bullet ('' when the probe did not run it)."""
    means = {row["cell"]: row["field_accuracy_mean"] for row in probe["summary"] if row["field"] == field}
    if not means:
        return ""
    top = [row for row in probe["ceiling"] if row["field"] == field]
    deployed = next((row for row in probe["rows"] if row["field"] == field and row["cell"] == "deployed"), {})
    return (f"{name}: " + ", ".join(f"{cell} {value:.3f}" for cell, value in means.items()) + "; "
            + _second_round(probe, field) + _where(deployed) + _ceiling(top, means.get("passive + style"))
            + _loop_ends(_runs_of(result, name), top))


def _second_round(probe: dict[str, Any], field: str) -> str:
    """The probe's second round on one field ('' for runs before it)."""
    rows = [row for row in probe.get("rounds_summary", []) if row["field"] == field]
    if not rows:
        return ""
    return ("a second round after a first retrain on 400 random frames (" + f"{rows[0]['first_accuracy']:.3f}"
            + "), 400 more: " + ", ".join(f"{row['second']} {row['field_accuracy']:.3f} (the first model right on "
                                          f"{row['first_model_right']:.3f} of them)" for row in rows) + "; ")


def _where(deployed: dict[str, Any]) -> str:
    if "errors_among_unsure" not in deployed:
        return ""
    return (f"the deployed model right on {deployed['unsure_accuracy']:.3f} of the 600 stream frames it is least "
            f"sure of and {deployed['rest_accuracy']:.3f} of the rest, those 600 holding "
            f"{deployed['errors_among_unsure']:.3f} of its errors, its two most given answers "
            f"{deployed['top2_answer_share']:.3f} of the frames; ")


def _ceiling(top: list[dict[str, Any]], passive: float | None) -> str:
    text = (f"the ceiling after {', '.join(str(row['epochs']) for row in top)} epochs "
            + ", ".join(f"{row['field_accuracy']:.3f}" for row in top)
            + (f" (on those 600 frames {top[-1]['unsure_accuracy']:.3f})" if top and "unsure_accuracy" in top[-1]
               else "") + "; ")
    gap = "" if passive is None else _gap(passive, top, 2)
    return text + (f"the ceiling's 2-epoch retrain (the hub's length) minus passive + style: {gap}; " if gap else "")


def _loop_ends(runs: list[dict[str, Any]], top: list[dict[str, Any]]) -> str:
    """What the loop's runs end at, and how far under the longest ceiling."""
    ends = ", ".join(f"{run['rounds'][-1]['accuracy_model_only']:.3f} / {run['passive'][-1]['accuracy_model_only']:.3f}"
                     for run in runs)
    longest = max((row["epochs"] for row in top), default=None)
    under = "" if longest is None or not runs else (
        f" (the {longest}-epoch ceiling minus the closed loop's end: "
        + ", ".join(_gap(run["rounds"][-1]["accuracy_model_only"], top, longest) for run in runs) + ")")
    return "the loop's runs end at (closed loop / passive) " + (ends or "not run") + under
