"""own_data.py's report (issue 14): the settings label of a row, the targets' verdicts and own_data.md."""

from __future__ import annotations

from typing import Any

from benchlib import markdown_table

# A 1-minute load average above this (2 cores) means another job ran beside the benchmark.
SHARED_LOAD = 2.5
ADADEEP_ORIGIN = "origin (adadeep's base)"  # own_data.py's row name for the AdaDeep compile's own base


def origin_storage(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each model's origin S (MB), the base of its storage demand, from the origin rows."""
    return {r["model"]: round(r["storage_mb"], 3) for r in rows if r["row"] == "origin"}


def settings_label(s: dict[str, Any]) -> str:
    """The compile settings a row was measured with, short (QUICK rows are not the benchmark's verdict)."""
    return (f"{'QUICK: ' if s.get('quick') else ''}{s.get('per_class')}/class, {s.get('episodes')} episodes, "
            f"{s.get('budget_minutes')} min, base {s.get('base_epochs')} + final {s.get('final_epochs')} epochs, "
            f"finetune {s.get('finetune_samples')}, S <= {s.get('storage_share', 0.5)} x origin"
            + (", int8 device" if s.get("quantize") == "int8" else ""))



# Earlier int8 runs of this benchmark (same 1,000 test images, same lowering), from their committed own_data.json:
# what moved agreement. The current run's row is added from its own JSON.
INT8_EARLIER = (
    {"run": "commit 1b0ebfb", "train_per_class": 300, "epochs": "4 + 2", "data": "random tints",
     "calibration": "random 500", "float_test_accuracy": 0.246, "litert": 0.780, "tvm": 0.775},
    {"run": "commit e9b039a", "train_per_class": 300, "epochs": "12 + 3", "data": "random tints",
     "calibration": "random 500", "float_test_accuracy": 0.26, "litert": 0.797, "tvm": 0.799},
    {"run": "commit 3b15b11", "train_per_class": 300, "epochs": "19 + 3", "data": "class_hues",
     "calibration": "50 per class", "float_test_accuracy": 0.811, "litert": 0.964, "tvm": 0.966},
    {"run": "commit 79ec53c", "train_per_class": 1000, "epochs": "12 + 3", "data": "class_hues",
     "calibration": "50 per class", "float_test_accuracy": 0.954, "litert": 0.991, "tvm": 0.992},
)


INT8_WHAT_IT_TOOK = (
    "What it took (issue 14's 'lowering stays faithful'): a confident float model. Agreement is a property of the "
    "float model's top-1 / top-2 margins: int8 flips almost only images within ~1 logit of a tie, so the lever is "
    "fewer near-ties: a learnable data set (class_hues) and more training images per class (300 -> 1,000 -> 2,000: "
    "float test accuracy 0.811 -> 0.954 -> 0.986, test images within 1 logit of a tie 78 -> 34 -> 12). The lowering is unchanged: full int8, "
    "per-channel weights (the converter default), per-tensor activations calibrated on 500 training images, 50 per "
    "class (hgen.compiler.lowering.tflite.representative_sample). Other levers (own_data_int8_levers.md): float "
    "input/output, the last 3 ops in float and empirical bias correction of the weights' rounding: no gain; the 5 or "
    "15 most sensitive tensors in float: 0.992 -> 0.995 on the 1,000-per-class model, none on the 300 one (mixed "
    "precision, not full int8, so not used). Each row: one training seed (0), agreement on all 1,000 test images "
    "(100 per class).")


# How the class-hue mobilenet_v2 rows came to their settings (issue 14's accuracy target), runs of this script in
# a clone of ccb07cb / b98a131 (same compile code) on an idle machine; the rows above are the last one.
CLASS_HUE_RUNS = (
    "How the class-hue mobilenet_v2 rows got their settings (each an idle-machine run of this script; the table "
    "holds the last): (1) the random-tint settings (base 10 + 3 frozen-BatchNorm epochs, final 3, search 10 min, "
    "A >= 0.6): origin 0.662, hgen 0.567 fused / 0.505 model-only at L 0.029 (its warm start, `stem_stride` alone, "
    "had 3 epochs to recover from a stem that halves every later map), AdaDeep 0.319; (2) base 19 + 3 epochs (the "
    "origin was still learning at 10), final 10, search 5 min: origin 0.723, hgen 0.713 / 0.711 at L 0.0007, "
    "AdaDeep 0.500: the compressed model came back to the origin's level, but A >= 0.6 was met by the model alone, "
    "so the compile's tau asked almost nobody (Eq. 14-15 reward labour saved once A is met); (3) as (2) with the "
    "accuracy demand set as the demo presets set theirs, above what the model reaches alone: the issue's target "
    "itself, origin + 3 points, 0.723 + 0.03 rounded up to 0.76 (the table). Each compile trains its own base with the "
    "same seed, yet CPU training is not bit-reproducible and this base scattered widely: 0.723 in (2), 0.806 and "
    "0.770 in (3)'s two compiles; so the origin row is now the base the hgen compile compressed (before, AdaDeep's: "
    "0.806 here), and AdaDeep's base has its own row. The origin gets base epochs only; every compressed row gets "
    "base + final epochs, distilled from its origin (all compression methods fine-tune after rewriting). Where the "
    "target is lost: `stem_stride`, the one operator that brings S under half (MobileNetV2's activations are 4.95 of "
    "its 6.64 MB), costs the model 5.8 points after 10 epochs (0.770 -> 0.712), and people at L 0.030 give back "
    "6.4 (0.776): +0.6 over the origin, not +3. (4, the table) gives the final fine-tune the search time hgen does "
    "not use on MobileNetV2 (its warm start, `stem_stride` alone, won every run): final 25 epochs, search 3 min, "
    "A >= 0.80 (run 3's base + 3 points): origin 0.779, hgen 0.784 fused / 0.730 model-only at L 0.036 on the "
    "test split (over the 0.03 budget: tau was chosen on the search split), AdaDeep 0.443 (its base 0.744); "
    "compile 10.1 min (the float class-hue rows). Longer fine-tuning narrowed the loss to 4.9 points; still +0.5, not +3.")

# The rows compiled with `--quantize int8` (hgen-compile's deployment precision, compiler/search/quantised.py), runs
# of this script in a clone of main on an idle machine.
INT8_DEVICE_RUNS = (
    "The `int8 device` rows (`--quantize int8`: the device runs full-int8 LiteRT, as a Pi stores and runs models): "
    "S of the compressed rows is counted at 8 bits per weight and activation (Eq. 11; the search holds S_c against "
    "it), and their temperature, tau, A and L are chosen and measured on the int8 model's own logits; the origin "
    "rows stay the float base (6.637 MB). (5) Run 4's settings (base 19 + 3, final 25, search 3 min, A >= 0.80, "
    "commit fbb14d8): hgen's warm start, the identity plan (1.659 MB at 8 bits, 4.0x below the float "
    "origin), met every demand in its first episode on the search split (A 0.828, L 0.021) and the search stopped "
    "(Algorithm 1). On the test split: origin 0.772; hgen's final model alone 0.809 as float, 0.806 as int8 (int8 "
    "costs 0.3 points), fused with SIMULATED people 0.826 at L 0.011: +5.4 points over the origin, compile 13.1 "
    "min, peak RSS 3.9 GB. Where the +5.4 comes from: +3.7 is the final fine-tune (with the identity plan the final "
    "model is the origin distilled into itself for 25 more epochs; the origin row gets base epochs only, as every "
    "row of this table), -0.3 int8, +2.0 people. Against the origin trained as long (0.809, float) hgen is +1.7: "
    "the demand A >= 0.80 was met with 1 % of frames asked, and once A is met the compile's tau (Eq. 14-15) saves "
    "labour instead of buying accuracy. AdaDeep at int8: 0.427 (0.482 as float; 29 layers rewritten, its 3-minute "
    "search fine-tuned 2 random plans). (6, rows in own_data.json `other_runs`) The same with A >= 0.84 (the "
    "longer-trained float model + 3), to see what people add when the demand asks for it: this compile's base "
    "came out weaker (0.666; bases scatter run to run), no plan met A on the search split, and hgen's final "
    "model alone reached 0.700 float / 0.699 int8; fused 0.765 at L 0.033 on the test split: +9.9 points over its "
    "origin and +6.5 over the same model without people (+6.6 people, -0.1 int8), but L over the 0.03 budget: "
    "target NOT reached in that run. When the labour budget binds, the final tau (chosen on the 500-image search "
    "split with the labour's 90 % upper bound) has now landed over L_c on the test split twice (run 4 0.036, run 6 "
    "0.033); runs that meet A with few people (2, 5) stay far under it. Compile 13.8 min; AdaDeep 0.421 (0.579 as "
    "float)."
)


def int8_runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier runs plus this one: training images per class, epochs (+ frozen-BatchNorm epochs), accuracy."""
    s, int8 = result["settings"], result.get("int8_details") or {}
    if not int8:
        return list(INT8_EARLIER)
    current = {"run": "this run", "train_per_class": s.get("int8_per_class") or s["per_class"],
               "epochs": f"{s['int8_epochs']} + {s['bn_freeze_epochs']}",
               "data": "class_hues" if s.get("int8_data", "class-hues") == "class-hues" else "random tints",
               "calibration": f"{s['representative'] // 10} per class",
               "float_test_accuracy": int8.get("keras_test_accuracy"), "litert": int8.get("litert_int8_vs_float"),
               "tvm": int8.get("tvm_int8_vs_float")}
    return [*INT8_EARLIER, current]


def plan_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What each compiled row rewrote: how many layers, and whether hgen's own `stem_stride` (not in the paper) is
    among them, since it alone cuts the activations that dominate a MobileNetV2's S."""
    lines = []
    for r in rows:
        plan = r.get("plan")
        if not isinstance(plan, dict):
            continue
        rewritten = {layer: op for layer, op in plan.items() if op != "identity"}
        stride = "with stem_stride (hgen's own operator)" if "stem_stride" in rewritten.values() else "no stem_stride"
        lines.append(f"- {r['model']} {r['row']} ({r.get('data', 'random tints')}): {len(rewritten)} layer(s) "
                     f"rewritten, {stride}; plan in own_data.json")
    return lines


def targets(rows: list[dict[str, Any]], int8: dict[str, Any] | None, labour_cap: float) -> list[str]:
    lines = []
    for model, data in dict.fromkeys((r["model"], r.get("data", "random tints")) for r in rows):  # in row order
        by = {r["row"]: r for r in rows if (r["model"], r.get("data", "random tints")) == (model, data)}
        o, h = by["origin"], by["hgen"]
        quick = " (QUICK rows: not the verdict)" if str(h.get("settings", "")).startswith("QUICK") else ""
        checks = [
            ((f"H-Gen accuracy >= origin + 3 points at L <= {labour_cap} (A {h['accuracy']:.3f} vs "
              f"{o['accuracy']:.3f} + 0.03, L {h['labour']:.4f})"),
             h["accuracy"] >= o["accuracy"] + 0.03 and h["labour"] <= labour_cap),
            (f"H-Gen storage at least 2x below origin ({h['storage_mb']:.3f} MB vs {o['storage_mb']:.3f} MB)",
             h["storage_mb"] * 2 <= o["storage_mb"]),
            (f"whole H-Gen compile <= 20 min on this machine ({h['compile_seconds'] / 60:.1f} min)",
             h["compile_seconds"] <= 20 * 60),
        ]
        lines += [f"- {model} ({data}): {text}: **{'reached' if ok else 'NOT reached'}**{quick}"
                  for text, ok in checks]
    if int8:
        for key, label in (("litert_int8_vs_float", "LiteRT int8"), ("tvm_int8_vs_float", "TVM int8")):
            value = int8.get(key)
            if value is None:
                lines.append(f"- {label} top-1 agreement with float >= 99%: **NOT measured** "
                         f"({int8.get('tvm_error', 'not run')})")
            elif int8.get("float_distinct_predictions", 10) < 2 or int8.get("keras_test_accuracy", 1.0) < 0.2:
                lines.append(f"- {label} top-1 agreement with float >= 99% ({100 * value:.2f} %): **NOT shown** "
                             "(the float model is not well above chance / predicts one class, so agreement is "
                             "trivial)")
            else:
                lines.append(f"- {label} top-1 agreement with float >= 99% ({100 * value:.2f} %): "
                             f"**{'reached' if value >= 0.99 else 'NOT reached'}**")
    return lines


def markdown(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    int8 = result.get("int8_details") or {}
    rs = s  # the compile settings of this run (rows from other runs carry their own)
    out = [
        "# Own data: colour image folder at 96x96 from FashionMNIST (issue 14)" + (" — QUICK MODE" if s["quick"] else ""),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU, Python {m['python']}.",
        "",
        "## How the data was made",
        "",
        (f"FashionMNIST uint8 images (Debian IDX files): the first {s['per_class']} (train) and next "
        f"{s['val_per_class']} (val) per class of its train split, the first {s['test_per_class']} per class of its "
        "test split, each through `hgen.compiler.data.synthetic.write_colour_folder(size=96)`: background = smooth "
        "random colour field (bilinear 4x4 grid) + stripes / checkerboard / speckle texture at 15-35 % contrast; the "
        "garment scaled to 45-75 % of the side, tinted with a random saturated colour, alpha-blended (its intensity as "
        "mask) at a random position; written as JPEG (quality 80-95) to `WORK/{train,val,test}/<class>/*.jpg`. "
        f"Read back only through the `folder` format: `load_dataset(\"{s['dataset_spec']}\")` (low-resolution "
        "challenge at its default factor). `data` = class hues: the same recipe with `class_hues=True` (the tint's "
        "hue is the class's, k * 36 degrees +- 12), a data set a model trained from scratch on 300 images per class "
        "can learn (compare the origin rows of both)."),
        "",
        "## Compiles (rpi4 profile; T estimated, annotators simulated)",
        "",
        (f"Settings: episodes {rs['episodes']}, search budget {rs['budget_minutes']} min, base epochs "
         f"{rs['base_epochs']}, final epochs {rs['final_epochs']}, finetune samples {rs['finetune_samples']}; demands "
         f"A >= {rs['accuracy']}, T <= {rs['latency_ms']} ms, E <= {rs['energy_mj']} mJ, L <= {rs['labour']}, S <= "
         f"{rs.get('storage_share', 0.5)} x the origin's S ({origin_storage(result['rows'])}). Each compile in its own "
         "subprocess; peak RSS is that process's ru_maxrss."),
        "",
    ]
    if any(r.get("data") == "class hues" for r in result["rows"]):
        out += [CLASS_HUE_RUNS, ""]
    if any("int8 device" in str(r.get("data")) for r in result["rows"]):
        out += [INT8_DEVICE_RUNS, ""]
    if not any(r["row"] == ADADEEP_ORIGIN for r in result["rows"] if r.get("data", "random tints") == "random tints"):
        out += ["The random-tint rows were measured before each compile's own base got its row: their origin is "
                "the base the AdaDeep compile trained, and H-Gen's own base was not recorded.", ""]
    if any(r.get("settings") != settings_label(s) for r in result["rows"]):
        out += ["Rows measured in another run than the settings above say so in their `settings` column (QUICK: an "
                "earlier run with tiny settings; not the benchmark's verdict).", ""]
    if result["rows"]:
        rows = [{"machine": m["cpu"], "data": "random tints"} | r
                | {"demand_A": (r.get("demands") or {}).get("accuracy")} for r in result["rows"]]
        out.append(markdown_table(rows, ["model", "row", "accuracy", "accuracy_model_only", "latency_ms",
                                                   "storage_mb", "energy_mj", "labour", "search_seconds",
                                                   "compile_seconds", "peak_rss_mb", "data", "demand_A", "settings",
                                                   "machine"]))
        out += ["", *plan_lines(result["rows"])]
    else:
        out.append("Not run (`--skip-compile`).")
    out += ["", "## int8 agreement (trained mobilenet_v2, test split)", ""]
    if int8:
        out += [INT8_WHAT_IT_TOOK, "",
                markdown_table(int8_runs(result), ["run", "train_per_class", "epochs", "data", "calibration",
                                                   "float_test_accuracy", "litert", "tvm"]), "",
                (f"This run's details (training images per class: {s.get('int8_per_class') or s['per_class']}; "
                 "val and test images as above):"), ""]
        out += [f"- {k}: {v}" for k, v in int8.items()]
    else:
        out.append("Not run (`--skip-int8`).")
    out += ["", "## Targets", "", *result["targets"]]
    scope = " (this run: the int8 section only; the rows above come from the runs their settings name)" \
        if s.get("skip_compile") else ""
    out += ["", f"Whole benchmark wall time: {result['wall_seconds']:.0f} s{scope}."]
    if result.get("load_average"):
        load = result["load_average"]
        shared = max(load["start"][0], load["end"][0]) > SHARED_LOAD
        out.append(f"Load average (1, 5, 15 min) at start {load['start']}, at end {load['end']}: "
                   + ("the machine was shared with other jobs, so compile seconds are upper bounds of what 2 free "
                      "cores take." if shared else "no other job ran beside it."))
    return "\n".join(out)


