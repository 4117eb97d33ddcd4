"""How alike a detector's Keras file and its bundle answer, and how alike another detector does: the measurement
behind `hgen.hub.retrain.deployed.MIN_CORRELATION` (the retrain's check that the Keras file it starts from is the
model the devices run, extended from classifiers to H-YOLO and H-Faster-RCNN).

Per kind and seed: the zoo detector (`grid_detector`, `two_stage_detector`) trained on digits-det canvases
(`hgen.hub.testing.models.deploy_detector` / `deploy_two_stage`, 3 epochs, the first 1,000 canvases), its signed
bundle in float and in full-integer int8 LiteRT (calibrated on 100 training canvases), and:
- own: its own Keras file against its float and int8 bundles (one model: must pass);
- one more epoch: the same model trained one epoch further (a newer version's weights: what a retrain's fine-tune
  changes, no more);
- other seed: the same architecture trained from another seed on the same data (another compile's model.keras).
Pearson correlation of the outputs (the flattened grids) on the first 256 test canvases: raw, and per image (each
output's mean over the canvases taken away, so the layout every detector shares, no object in most cells, does not
count as agreement; what the hub compares, `image_correlation`).

    python tools/bench/one_model_detectors.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, markdown_table, write_results  # noqa: E402

PROBE = 256
EPOCHS, LIMIT = 3, 1000


def bundle_outputs(folder: Path, public_key: Path, x: np.ndarray) -> np.ndarray:
    from hgen.hub.retrain.deployed import device_outputs
    from hgen.runtime.signing import load_public_key

    found = device_outputs(folder, load_public_key(public_key), x)
    assert found is not None, f"{folder} does not run here"
    return found


def one_more_epoch(deployed: Any, kind: str, out: Path) -> Path:
    """The deployed Keras model trained one more epoch on its data (seeded like the first)."""
    from hgen.compiler.models import load_model_file

    model = load_model_file(deployed.keras_path)
    if kind == "yolo":
        from hgen.compiler.models.grid_detector import DetectorTrainConfig, train_detector

        train_detector(model, deployed.data.train, deployed.data.num_classes, DetectorTrainConfig(epochs=1, seed=9))
    else:
        from hgen.compiler.models.two_stage_detector import TwoStageTrainConfig, train_two_stage

        train_two_stage(model, deployed.data.train, deployed.data.num_classes, TwoStageTrainConfig(epochs=1, seed=9))
    model.save(out)
    return out


def measure(kind: str, seed: int, work: Path) -> list[dict[str, Any]]:
    from hgen.compiler.models import load_model_file
    from hgen.compiler.train import predict_logits
    from hgen.hub.retrain.deployed import correlation, image_correlation
    from hgen.hub.testing.models import deploy_detector, deploy_two_stage, sign_bundle

    deploy = deploy_detector if kind == "yolo" else deploy_two_stage
    own = deploy(work / f"{kind}-{seed}", epochs=EPOCHS, limit=LIMIT, seed=seed)
    other = deploy(work / f"{kind}-{seed}-other", epochs=EPOCHS, limit=LIMIT, seed=seed + 100)
    x = np.asarray(own.data.test.x[:PROBE], np.float32)
    int8 = sign_bundle(own, load_model_file(own.keras_path), kind, work / f"{kind}-{seed}-int8", quantize="int8")
    bundles = {"float": bundle_outputs(own.bundle_dir, own.public_key, x),
               "int8": bundle_outputs(int8, own.public_key, x)}
    files = {"own": own.keras_path, "one more epoch": one_more_epoch(own, kind, work / f"{kind}-{seed}-more.keras"),
             "other seed": other.keras_path}
    rows = []
    for file_label, path in files.items():
        hub = predict_logits(load_model_file(path), x)
        for bundle_label, device in bundles.items():
            rows.append({"kind": kind, "seed": seed, "keras file": file_label, "bundle": bundle_label,
                         "correlation": round(correlation(hub, device), 4),
                         "per-image correlation": round(image_correlation(hub, device), 4)})
    return rows


def report(rows: list[dict[str, Any]], seconds: float, threshold: float) -> str:
    def span(label: str, bundle: str) -> str:
        values = [r["per-image correlation"] for r in rows if r["keras file"] == label and r["bundle"] == bundle]
        return f"{min(values):.4f}-{max(values):.4f}"

    return "\n".join([
        "# One model? A detector's Keras file against its bundle",
        "",
        __doc__.split("\n\n    python")[0],
        "",
        f"Machine: {machine()['cpu']}, {machine()['cores']} cores, no GPU (shared with a test run). "
        f"Threshold in the hub: refused below {threshold} (`MIN_CORRELATION`). Wall time {seconds:.0f} s. "
        "Correlations, not timings: one run each, no medians.",
        "",
        "Per-image correlation, lowest-highest over kinds and seeds:",
        "",
        f"- own file, int8 bundle: {span('own', 'int8')}; float bundle: {span('own', 'float')}",
        f"- one more epoch, int8 bundle: {span('one more epoch', 'int8')}",
        f"- other seed, int8 bundle: {span('other seed', 'int8')}",
        "",
        markdown_table(rows, ["kind", "seed", "keras file", "bundle", "correlation", "per-image correlation"]),
        "",
        "Reading: the threshold sits between the own file with int8 (the lowest a correct pair showed) and another "
        "seed's model (the highest a wrong file showed). A file one epoch of fine-tuning away is not what the check "
        "is for (a retrain from last version's weights still starts from the devices' model family); where it "
        "passes, the table says so.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    from hgen.hub.retrain.deployed import MIN_CORRELATION

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("yolo", "faster_rcnn"):
            for seed in args.seeds:
                rows += measure(kind, seed, Path(tmp))
                print(rows[-6:], flush=True)
    seconds = time.perf_counter() - start
    write_results("one_model_detectors", {"threshold": MIN_CORRELATION, "probe_images": PROBE, "epochs": EPOCHS,
                                          "limit": LIMIT, "rows": rows, "seconds": seconds},
                  report(rows, seconds, MIN_CORRELATION))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
