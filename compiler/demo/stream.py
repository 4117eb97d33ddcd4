"""What the demo watches while the camera streams: the agent's results per frame (`FrameLog`, also the simulated
people's oracle) and the waits for a published retrain and the agent's hot swap."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hgen.compiler.demo.config import DemoConfig, DemoError, Log


@dataclass
class FrameLog:
    """The agent's results by frame (final ones replace pending ones) and the sample id -> frame map."""

    truth: Any  # per frame: a class, or true boxes (detection)
    boxes: bool = False
    results: dict[int, Any] = field(default_factory=dict)
    frame_of: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, result: Any) -> None:
        with self.lock:
            if result.sample_id:
                self.frame_of[result.sample_id] = result.frame_index
            if result.final or result.frame_index not in self.results:
                self.results[result.frame_index] = result

    def oracle(self, sample_id: str) -> int:
        """What a person sees in the frame: its true class (the simulated crowd then errs at its own rate)."""
        with self.lock:
            return int(self.truth[self.frame_of[sample_id] % len(self.truth)])

    def frames_after(self, version: str) -> int:
        """Frames run by any version other than `version` (the first one)."""
        with self.lock:
            return sum(1 for r in self.results.values() if r.bundle_version != version)

    def last_version(self) -> str:
        """The version that ran the stream's last frame: a retrain published after the stream ended may still be
        swapped in, but no frame ran on it, so it is not the one the demo reports."""
        with self.lock:
            return self.results[max(self.results)].bundle_version

    def accuracy(self, version: str) -> dict[str, float]:
        with self.lock:
            mine = [r for r in self.results.values() if r.bundle_version == version and r.final]
        if self.boxes:
            from hgen.compiler.demo.detection import stream_accuracy

            return stream_accuracy(mine)
        if not mine:
            return {"frames": 0, "model_only": float("nan"), "fused": float("nan"), "share_to_people": float("nan")}
        truth = [int(self.truth[r.frame_index % len(self.truth)]) for r in mine]
        return {"frames": len(mine),
                "model_only": sum(r.model_label == t for r, t in zip(mine, truth)) / len(mine),
                "fused": sum(r.label == t for r, t in zip(mine, truth)) / len(mine),
                "share_to_people": sum(r.status.value != "model" for r in mine) / len(mine)}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll a cheap condition with a deadline (the components expose state, not events, for these)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        threading.Event().wait(poll_s)


def wait_for_published_run(config: DemoConfig, app: Any, agent: Any, log: Log) -> Any:
    """The first threshold-triggered retrain that was published (a refused one is logged and the loop goes on)."""
    deadline = time.monotonic() + config.timeout_minutes * 60
    last = 0
    while True:
        if time.monotonic() > deadline:
            raise DemoError(f"no retrain was published within {config.timeout_minutes:g} min (each run's outcome is "
                            "above): raise --timeout-minutes, or lower the retrain threshold")
        if agent_finished(agent):
            raise DemoError("the stream ended before a retrain was published: lower retrain_threshold or fps")
        try:
            run = app.retrain.wait_for_run(model_name(app), after_id=last, timeout=2.0)
        except TimeoutError:
            continue
        log(f"      retrain run {run.id}: {run.status}" + (f" ({run.error})" if run.error else ""))
        if run.status == "published":
            return run
        last = run.id


def stream_until_swapped(config: DemoConfig, app: Any, agent: Any, frames: FrameLog, first: str, log: Log) -> Any:
    """Wait for a threshold-triggered retrain to publish, the agent to swap, and enough frames on newer models.

    The camera keeps streaming, so people keep answering and later retrains may publish while the agent fetches:
    the agent may skip straight to the newest version."""
    wait_for_published_run(config, app, agent, log)
    timeout = config.timeout_minutes * 60
    wait_for(lambda: agent.model.version != first, timeout, f"the agent to hot-swap from {first}")
    log(f"[6/7] agent hot-swapped {first} -> {agent.model.version}; streaming {config.frames_after_swap} more frames")
    wait_for(lambda: frames.frames_after(first) >= config.frames_after_swap or agent_finished(agent), timeout,
             "frames on the new model")


def run_that_made(app: Any, version: str) -> Any:
    """The published retrain run whose output is `version` (the demo reports the version the agent ended on)."""
    runs = app.retrain.store.runs(model_name(app), limit=1000)
    return next(run for run in runs if run.to_version == version)


def model_name(app: Any) -> str:
    return app.config.retrain.models[0].name


def agent_finished(agent: Any) -> bool:
    return agent.wait(0)
