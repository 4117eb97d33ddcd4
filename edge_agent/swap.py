"""Hot swap: load a verified bundle beside the running one, health-check it on recent frames, switch between
frames, keep the previous one and roll back when the new one errors (or, in probation, outputs non-finite).

The switch is one reference assignment under a lock, done by the pipeline thread between two frames, so no
frame waits for a load: loading and the canary run happen on the swap thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hgen.edge_agent.config import BundleConfig, SwapConfig
from hgen.edge_agent.errors import HealthCheckError
from hgen.edge_agent.model import Model, load_model

log = logging.getLogger(__name__)


class ModelSlot:
    """The active model, the previous one (rollback target) and a staged candidate."""

    def __init__(self, model: Model, config: SwapConfig, on_event: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.active = model
        self.previous: Model | None = None
        self._staged: Model | None = None
        self._probation = 0
        self._canary: deque[np.ndarray] = deque(maxlen=config.canary_frames)
        self._on_event = on_event or (lambda kind, detail: None)
        self.last_switch_ms = 0.0
        self.rejected_versions: set[str] = set()
        self._closed = False  # after `close`, a candidate staged late (a swap thread finishing) is closed at once

    # --- canary and health check --------------------------------------------------------------------

    def observe(self, x: np.ndarray) -> None:
        """Remember a recent model input for the next health check (called by the pipeline)."""
        self._canary.append(x)

    def canary_inputs(self, model: Model) -> np.ndarray:
        shape = tuple(model.manifest.input.shape[1:])
        frames = [frame for frame in list(self._canary) if frame.shape == shape]  # mixed right after a variant swap
        if not frames:
            rng = np.random.default_rng(0)
            frames = [rng.random(shape, dtype=np.float32) for _ in range(self.config.canary_frames)]
        return np.stack(frames).astype(np.float32)

    def health_check(self, candidate: Model) -> None:
        """The manifest's output shape (logits or a detection grid), finite outputs that the kind can read
        (confidence in [0, 1]), and (optionally) the same answers as the running model on most canary frames."""
        inputs = self.canary_inputs(candidate)
        outputs = candidate.infer(inputs)
        expected = (len(inputs), *candidate.manifest.output_shape[1:])
        if outputs.shape != expected:
            raise HealthCheckError(f"outputs of shape {outputs.shape}, expected {expected}")
        if not np.isfinite(outputs).all():
            raise HealthCheckError(f"{int((~np.isfinite(outputs)).sum())} non-finite outputs on the canary frames")
        confidence = candidate.kind.confidence(outputs, candidate.params)
        if not np.all((confidence >= 0.0) & (confidence <= 1.0)):
            raise HealthCheckError(f"{candidate.kind.name} confidence outside [0, 1] on the canary frames")
        if self.config.min_agreement > 0:
            self._check_agreement(candidate, inputs, outputs)

    def _check_agreement(self, candidate: Model, inputs: np.ndarray, outputs: np.ndarray) -> None:
        """Share of canary frames where both models give the same answer (top-1 class; detected class set)."""
        if inputs.shape[1:] != tuple(self.active.manifest.input.shape[1:]) or \
                self.active.manifest.kind != candidate.manifest.kind:
            return
        current = self.active.adapter.answer_key(self.active, self.active.infer(inputs))
        new = candidate.adapter.answer_key(candidate, outputs)
        agreement = float(np.mean([a == b for a, b in zip(current, new)]))
        if agreement < self.config.min_agreement:
            raise HealthCheckError(f"answer agreement with the running model {agreement:.2f} "
                                   f"< {self.config.min_agreement}")

    def prepare(self, path: Path, bundle: BundleConfig, *, tau: float | None, m: int | None) -> Model:
        """Verify, load and health-check a candidate; it is not active until `stage` + the next frame."""
        candidate = load_model(path, bundle, tau=tau, m=m)
        try:
            self.health_check(candidate)
        except BaseException:
            candidate.close()
            raise
        return candidate

    def stage(self, candidate: Model) -> bool:
        """Hold the candidate for the next frame; False (the candidate closed) once the slot is closed: a swap
        thread that finished loading after `stop` would otherwise leave that model open for good. A candidate
        staged before and not yet running is closed and reported (event `replaced`, "OLD -> NEW"): it never ran."""
        with self._lock:
            replaced, closed = self._staged, self._closed
            if not closed:
                self._staged = candidate
        if closed:
            candidate.close()
            return False
        if replaced is not None:
            replaced.close()
            self._on_event("replaced", f"{replaced.version} -> {candidate.version}")
        return True

    @property
    def staged(self) -> bool:
        with self._lock:
            return self._staged is not None

    # --- switching, inference, rollback -------------------------------------------------------------

    def maybe_switch(self) -> Model | None:
        """Make the staged model active (between frames); returns the model it replaced."""
        with self._lock:
            if self._staged is None:
                return None
            start = time.perf_counter()
            old, retired = self.active, self.previous
            self.active, self.previous, self._staged = self._staged, old, None
            self._probation = self.config.probation_frames
            self.last_switch_ms = (time.perf_counter() - start) * 1e3
        if retired is not None:
            retired.close()
        self._on_event("swap", f"{old.version} -> {self.active.version}")
        return old

    def infer(self, x: np.ndarray) -> tuple[Model, np.ndarray]:
        """Run the active model; on an error (or non-finite output in probation) roll back and rerun the frame."""
        with self._lock:
            model, probation = self.active, self._probation
        try:
            logits = model.infer(x)
            if probation > 0:
                if not np.isfinite(logits).all():
                    raise HealthCheckError("non-finite outputs during probation")
                with self._lock:
                    self._probation = max(0, self._probation - 1)
            return model, logits
        except Exception as exc:
            fallback = self._rollback(model, exc)
            if fallback is None:
                raise
            return fallback, fallback.infer(x)

    def _rollback(self, failed: Model, exc: Exception) -> Model | None:
        with self._lock:
            if self.previous is None or self.active is not failed:
                return self.active if self.active is not failed else None
            self.active, self.previous, self._probation = self.previous, None, 0
            self.rejected_versions.add(failed.version)
        log.error("bundle %s failed at run time (%s); rolled back to %s", failed.version, exc, self.active.version)
        self._on_event("rollback", f"{failed.version} failed at run time ({exc}); back on {self.active.version}")
        failed.close()
        return self.active

    def running(self) -> tuple[Path, str, tuple[Path, ...]]:
        """The active bundle's file, its version, and the files of every model held (the bundle store keeps
        those)."""
        with self._lock:
            held = tuple(m.path for m in (self.active, self.previous, self._staged) if m is not None)
            return self.active.path, self.active.version, held

    def close(self) -> None:
        with self._lock:
            self._closed = True
            models = [m for m in (self.active, self.previous, self._staged) if m is not None]
            self._staged = None
        for model in models:
            model.close()
