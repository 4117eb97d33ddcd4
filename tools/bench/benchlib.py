"""Shared by the benchmarks: machine description, medians, and writing NAME.json + NAME.md side by side."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform(),
            "gpu": "none"}


def git_commit(folder: Path = RESULTS) -> str:
    """The short commit of the checkout holding `folder`: the code the numbers were measured on."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True,
                          check=True).stdout.strip()


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median wall seconds of `fn` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], markdown: str, folder: Path = RESULTS) -> tuple[Path, Path]:
    """Write `folder/name.json` and `folder/name.md`; the JSON always carries the machine description."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), **data}
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def calibrate_batch_norm(model: Any, images: np.ndarray) -> None:
    """Set BatchNorm statistics from one batch: at initialisation (mean 0, var 1) activations of a random
    MobileNetV2 vanish to ~1e-12 logits, which would make any precision comparison meaningless."""
    import keras  # lazy: only the benchmarks that build Keras models need it

    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(images[:64], training=True)
    for layer in batch_norms:
        layer.momentum = 0.99


def labels_short(app: Any, name: str, threshold: int, last_run: int) -> int:
    """Human labels a hub (`hgen.hub.app.HubApp`) still needs before it starts the next retrain of `name`: 0 once it
    has a run after `last_run`. A reply no majority of the people asked agreed on is no label
    (`hgen.hub.kb.closing`), so a loop that sent exactly `threshold` samples could wait for a retrain forever."""
    if any(run.id > last_run for run in app.retrain_store.runs(name, limit=5)):
        return 0
    return max(0, threshold - app.retrain_store.new_label_count(name))
