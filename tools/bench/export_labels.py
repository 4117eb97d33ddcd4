"""How long `hgen-hub export` takes and how much memory it holds, by the number of labels in the knowledge base.

The knowledge base is made through the hub's own API (HubService on SQLite or PostgreSQL, the device's submit and the annotator
API; one SIMULATED person answers every sample, m=1): camera-like frames (`CELLS`, JPEG quality 90 of smooth
gradients with seeded noise, 10 classes), then `export_labels` writes them as class folders. Per cell: the median
of `REPEATS` exports into a fresh folder, with the peak of Python-tracked memory (tracemalloc: NumPy's and
Python's allocations, not SQLite's page cache) during the export.

    python tools/bench/export_labels.py              # measure (about 25 minutes on 2 cores)
    python tools/bench/export_labels.py --from-json  # re-write the .md from the stored .json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import git_commit, machine, markdown_table, write_results  # noqa: E402

# (database, labels, frame width, frame height)
CELLS = (("sqlite", 1000, 96, 96), ("sqlite", 1000, 640, 480), ("sqlite", 10000, 96, 96),
         ("sqlite", 10000, 640, 480), ("postgresql", 10000, 96, 96))
REPEATS = 3
BATCH = 100
RESULTS = Path(__file__).resolve().parent / "results"


def frame(rng: np.random.Generator, width: int, height: int) -> bytes:
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    noisy = np.clip(ramp * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 12, (height, width, 3)), 0, 255)
    ok, encoded = cv2.imencode(".jpg", noisy.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def filled_hub(url: str, root: Path, n: int, width: int, height: int):  # type: ignore[no-untyped-def]
    from hgen.hub.config import parse_hub_config
    from hgen.hub.service import HubService
    from hgen.hub.testing.samples import make_request, make_sample
    from hgen.protos import hub_pb2

    config = parse_hub_config({"devices": ["cam"], "num_classes": 10, "knowledge_base": {
        "url": url, "image_dir": str(root / "images")},
        "limits": {"max_open_samples_per_device": 10 * BATCH}})
    service = HubService.from_config(config)
    service.annotators.register("sim", simulated=True)
    rng = np.random.default_rng(0)
    for start in range(0, n, BATCH):
        samples = []
        for i in range(start, min(n, start + BATCH)):
            image = hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_JPEG, data=frame(rng, width, height), height=height,
                                  width=width, channels=3)
            samples.append(make_sample("cam", top=i % 10, image=image))
        service.submit(make_request("cam", samples, m=1, deadline_s=86400.0), "grpc")
        while (task := service.annotators.next_task("sim")) is not None:
            service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="sim", class_id=1,
                                                            operations=1, latency_s=1.0, simulated=True))
    return config, service


def measure(url: str, root: Path, n: int, width: int, height: int) -> dict[str, object]:
    from hgen.hub.export.run import ExportSettings, export_labels

    config, service = filled_hub(url, root, n, width, height)
    seconds, peaks, written = [], [], 0
    try:
        for repeat in range(REPEATS):
            out = root / f"export-{repeat}"
            tracemalloc.start()
            start = time.perf_counter()
            report = export_labels(service.kb, "lenet5", out, ExportSettings.of_hub(config))
            seconds.append(time.perf_counter() - start)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            written = sum(report.written.values())
            shutil.rmtree(out)
    finally:
        service.close()
    median = statistics.median(seconds)
    return {"database": url.split(":")[0].split("+")[0], "labels": n, "frame": f"{width}x{height}", "exported": written, "median_s": round(median, 2),
            "labels_per_s": round(written / median), "peak_python_mib": round(statistics.median(peaks) / 2**20, 1),
            "runs_s": [round(s, 2) for s in seconds]}


def report(rows: list[dict[str, object]], m: dict[str, object], commit: str = "") -> str:
    return "\n".join([
        "# `hgen-hub export`: time and memory by knowledge-base size (annotators SIMULATED)", "",
        __doc__.split("\n\n    python")[0], "",
        (f"Commit {commit}. " if commit else "") + f"Machine: {m['cpu']}, {m['cores']} cores; SQLite on local disk, "
        "PostgreSQL a local throw-away cluster (hgen.hub.testing.services.postgres, fsync off); "
        f"{REPEATS} exports per cell, the median time; memory is the median of the runs' peaks. JPEGs under 64 KiB (the 96x96 frames) are stored inline, the 640x480 ones "
        "(about 100 KiB) as files.", "",
        "`exported` is below `labels` where the hub refused frames as they came: its per-device hourly image "
        "budget (`limits.max_image_bytes_per_device_per_hour`, 1 GiB by default), which 10,000 frames of 100 KiB "
        "sent at once overran.", "",
        markdown_table(rows, ["database", "labels", "frame", "exported", "median_s", "labels_per_s",
                              "peak_python_mib"]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-json", action="store_true", help="re-write the .md from the stored .json")
    args = parser.parse_args(argv)
    if args.from_json:
        stored = json.loads((RESULTS / "export_labels.json").read_text())
        write_results("export_labels", stored, report(stored["rows"], stored["machine"], stored.get("commit", "")))
        return 0
    from hgen.hub.testing.services import postgres

    rows = []
    with postgres() as server:
        for database, n, width, height in CELLS:
            with tempfile.TemporaryDirectory() as tmp:
                url = (f"sqlite:///{Path(tmp) / 'hub.db'}" if database == "sqlite"
                       else server.create_database(f"export_{n}_{width}"))
                rows.append(measure(url, Path(tmp), n, width, height))
                print(rows[-1], flush=True)
    m = machine()
    commit = git_commit()
    write_results("export_labels", {"repeats": REPEATS, "machine": m, "commit": commit, "rows": rows},
                  report(rows, m, commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
