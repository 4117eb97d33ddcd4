"""The demo on a detection data set (a YOLO set, a COCO file, `digits-det`): what differs from classification.

The compile makes an H-YOLO bundle (`compile_detect.py`), the agent streams boxes, the SIMULATED crowd draws boxes
(`hub.testing.detection.BoxCrowd`: noisy copies of the frame's true boxes, through the annotator API and the hub's
box_union), and the hub retrains the detector on people's boxes plus the original data, read again through the same
format and cache. Both versions are measured on the evaluation pool by mAP@0.5: the model alone, and fused with
people on the frames the gate sends them, where people's aggregated answer is SIMULATED as the true boxes with
1 px corner noise (a stand-in for box_union over m noisy annotators, the same for both versions).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.data.detection import DetectionSplit
from hgen.compiler.errors import InvalidArgumentError

METRIC = "mAP@0.5"
CORNER_NOISE_PX = 1.0
IDLE_WAIT_S = 0.5


def is_detection(data: Any) -> bool:
    from hgen.compiler.data.detection import DetectionDataset

    return isinstance(data, DetectionDataset)


def load_demo_data(spec: str, *, seed: int, limit: int | None) -> Any:
    """A classification `Dataset`, or a `DetectionDataset` for a detection spec."""
    from hgen.compiler.data import load_dataset, require_splits
    from hgen.compiler.data.detection import is_detection_spec, load_detection_dataset

    data = load_detection_dataset(spec, seed=seed, limit=limit) if is_detection_spec(spec) else \
        load_dataset(spec, seed=seed, limit=limit)
    require_splits(data)  # the compile, the pools and the evaluation each need their split
    return data


def dataset_base(data: Any) -> str:
    """What selects the demo's preset: a built-in's base, anything else is the user's own data."""
    return "own" if is_detection(data) else data.spec.base


def truth_of(split: Any) -> Any:
    """Per frame what people see: a class, or the true boxes (normalised corners + class)."""
    return split.boxes if isinstance(split, DetectionSplit) else split.y


@dataclass
class BoxOracle:
    """Sample id -> the true pixel boxes of the frame it came from (frames are square: the pool's image side)."""

    frames: Any  # the demo's FrameLog (sample id -> frame index)
    side: int

    def __getitem__(self, sample_id: str) -> np.ndarray:
        with self.frames.lock:
            index = self.frames.frame_of[sample_id]
        rows = np.array(self.frames.truth[index % len(self.frames.truth)], np.float64, copy=True).reshape(-1, 5)
        rows[:, :4] *= self.side
        return rows


@dataclass
class BoxCrowdDriver:
    """A thread that lets the SIMULATED box annotators answer until stopped (as `CrowdDriver` does for classes)."""

    crowd: Any  # hub.testing.detection.BoxCrowd
    api: Any
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BoxCrowdDriver:
        self._thread = threading.Thread(target=self._run, name="simulated-box-crowd", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.api.notify_work()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        import logging

        generation = 0
        while not self._stop.is_set():
            try:
                before = self.crowd.answered
                if self.crowd.run_until_idle() > before:
                    continue
            except Exception:  # keep answering across a refused answer or a hub hiccup
                logging.getLogger(__name__).exception("simulated box crowd round failed")
            generation = self.api.wait_for_work(generation, IDLE_WAIT_S)


def start_box_crowd(app: Any, frames: Any, side: int, m: int, num_classes: int, seed: int) -> BoxCrowdDriver:
    from hgen.hub.testing.detection import BoxAnnotator, BoxCrowd

    crowd = BoxCrowd(app.service.annotators, tuple(BoxAnnotator(f"sim-box-{i}") for i in range(m)),
                     BoxOracle(frames, side), num_classes, seed=seed)
    return BoxCrowdDriver(crowd, app.service.annotators).start()


def stream_accuracy(results: list[Any]) -> dict[str, float]:
    """A stream's frames and share sent to people (box accuracy is measured on the evaluation pool only)."""
    if not results:
        return {"frames": 0, "share_to_people": float("nan")}
    return {"frames": len(results), "share_to_people": sum(r.status.value != "model" for r in results) / len(results)}


def people_boxes(truth: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """SIMULATED aggregated answer [k, 6]: the true boxes with `CORNER_NOISE_PX` corner noise, full support."""
    rows = np.array(truth, np.float64).reshape(-1, 5)
    corners = np.clip(rows[:, :4] + rng.normal(0.0, CORNER_NOISE_PX / side, rows[:, :4].shape), 0.0, 1.0)
    corners[:, 2:] = np.maximum(corners[:, 2:], corners[:, :2] + 1.0 / side)
    return np.column_stack([corners, rows[:, 4], np.ones(len(rows))])


def evaluate_detection_versions(bundles: dict[str, tuple[str, str | Path]], public_key: str | Path, target: str,
                                pool: DetectionSplit, *, m: int, seed: int) -> dict[str, dict[str, Any]]:
    """`bundles` maps a row name to (version, bundle path); every row gets mAP@0.5 (model only, fused), share, L."""
    from hgen.compiler.compile_detect import labour_at
    from hgen.compiler.demo.pools import bundle_logits
    from hgen.compiler.metrics.detection import mean_average_precision
    from hgen.runtime.hdnn import FusionParams, get_kind, needs_human

    if len(pool) == 0:
        raise InvalidArgumentError("the evaluation pool is empty")
    rng = np.random.default_rng(seed)
    answers = [people_boxes(b, rng, pool.x.shape[1]) for b in pool.boxes]  # the same people for every row
    rows: dict[str, dict[str, Any]] = {}
    for name, (version, path) in bundles.items():
        outputs, manifest, _ = bundle_logits(path, public_key, target, pool.x)
        kind, params = get_kind(manifest.kind), FusionParams(manifest.temperature, manifest.fusion_lambda)
        confidence = kind.confidence(outputs, params)
        gate = needs_human(confidence, manifest.tau)
        fused = kind.fuse(outputs, [a if g else None for a, g in zip(answers, gate)], params)
        classes = len(manifest.labels)
        rows[name] = {"version": version, "images": len(pool), "tau": manifest.tau, "metric": METRIC,
                      "model_only": mean_average_precision(kind.predict(outputs, params), pool.boxes, classes),
                      "fused": mean_average_precision(fused, pool.boxes, classes),
                      "share_to_people": float(gate.mean()), "labour": labour_at(confidence, manifest.tau, m)}
    return rows
