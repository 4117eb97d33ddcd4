"""The soak benchmark's parts (tools/bench/soak.py): what a run observes and how its numbers are computed.

An `Observer` is the agent's result callback: it keeps, per escalated sample, when it went to people and every
result that came from a reply (fused, late, declined, hub_refused), and samples the outbox depth over time.
`summarise` turns that into the issue's columns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPLY_RESULTS = {"fused", "late", "declined", "hub_refused"}


@dataclass
class Observer:
    """Collects results (a callback sink, or read back from the agent's JSONL sink) and the outbox depth."""

    clock: Callable[[], float] = time.monotonic  # the agent's (a StreamClock's in the outage run)
    started: float = -1.0
    escalated_at: dict[str, float] = field(default_factory=dict)
    replies: dict[str, list[tuple[str, float]]] = field(default_factory=lambda: defaultdict(list))
    depth: list[tuple[float, int]] = field(default_factory=list)
    untimed: set[str] = field(default_factory=set)  # read back from a JSONL sink: when is not known
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def __call__(self, result: Any) -> None:
        self.record(result.status.value, result.sample_id, self.clock())

    def record(self, status: str, sample_id: str | None, at: float) -> None:
        if not sample_id:
            return
        with self.lock:
            if status == "pending":
                self.escalated_at.setdefault(sample_id, at)
            elif status in REPLY_RESULTS:
                self.replies[sample_id].append((status, at))

    def read_jsonl(self, path: Path) -> None:
        """Results of a subprocess agent (killed and restarted): results carry no emission time, so these
        samples count everywhere except in the time to converge."""
        if not path.exists():
            return
        now = self.clock()
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                self.record(row["status"], row.get("sample_id"), now)
                if row.get("sample_id"):
                    self.untimed.add(row["sample_id"])

    def sample_depth(self, outbox: Path, stop: threading.Event, every_s: float = 0.5) -> threading.Thread:
        """Read the outbox file's depth every `every_s` (works whether the agent is in-process or not)."""
        def run() -> None:
            while not stop.wait(every_s):
                self.depth.append((self.clock() - self.started, outbox_depth(outbox)))

        thread = threading.Thread(target=run, name="soak-depth", daemon=True)
        thread.start()
        return thread


def outbox_depth(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
    except sqlite3.Error:
        return -1  # the agent holds a write lock or the file is mid-creation: a gap in the curve


def summarise(observer: Observer, *, fault: str, transport: str, faults: int, still_in_outbox: set[str],
              hub_samples: set[str], hub_replies: int, hub_multi: int, duplicate_replies: int,
              drain_s: float) -> dict[str, Any]:
    """The issue's columns for one run (definitions in soak.py's docstring)."""
    escalated = set(observer.escalated_at)
    answered = {s: r for s, r in observer.replies.items() if s in escalated}
    once = {s for s, r in answered.items() if len(r) == 1}
    duplicated = {s for s, r in answered.items() if len(r) > 1}
    unconverged = (escalated - set(answered)) & still_in_outbox
    lost = escalated - set(answered) - still_in_outbox
    waits = [r[0][1] - observer.escalated_at[s] for s, r in answered.items() if s not in observer.untimed]
    in_patience = sum(1 for r in answered.values() if r[0][0] != "late")
    return {
        "fault": fault, "transport": transport, "faults": faults, "escalated": len(escalated),
        "fused_once": len(once), "lost": len(lost), "duplicated": len(duplicated), "unconverged": len(unconverged),
        "converge_s_p50": _pct(waits, 50), "converge_s_p99": _pct(waits, 99),
        "duplicate_replies_per_sample": round(duplicate_replies / max(1, len(escalated)), 3),
        "fused_in_patience": round(in_patience / max(1, len(escalated)), 4),
        "converge_timed_samples": len(waits),
        "hub_samples": len(hub_samples), "hub_replies": hub_replies, "hub_samples_with_two_replies": hub_multi,
        "hub_missing": len(escalated - hub_samples), "drain_s": round(drain_s, 1),
        "outbox_depth": [(round(t, 1), d) for t, d in observer.depth],
    }


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None
