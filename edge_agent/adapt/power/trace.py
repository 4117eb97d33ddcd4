"""`trace`: a JSON-lines file of `{"t": seconds, "battery": 0..1, "charging": bool}`, replayed against the agent's
clock from the first read (`clock: time`) or one row per read (`clock: step`); the last row holds after the end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hgen.edge_agent.adapt.power import POWER_SOURCES, PowerReading
from hgen.edge_agent.config import PowerConfig
from hgen.edge_agent.errors import AgentConfigError


def load_trace(path: Path) -> list[dict[str, float]]:
    """The rows by time; a bad line is a typed config error naming the line."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AgentConfigError(f"power trace {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(_row(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentConfigError(f"power trace {path} line {number}: {exc}") from exc
    if not rows:
        raise AgentConfigError(f"power trace {path} has no rows")
    return sorted(rows, key=lambda r: r["t"])


def _row(row: Any) -> dict[str, float]:
    """One checked row: a battery of 55 (percent) read as full and NaN as empty, so they are refused here."""
    t, battery = float(row["t"]), float(row["battery"])
    if not math.isfinite(t):
        raise ValueError(f"t {t} is not a finite number")
    if not 0.0 <= battery <= 1.0:  # NaN fails this too
        raise ValueError(f"battery {battery} is not a share in [0, 1]")
    return {"t": t, "battery": battery, "charging": bool(row.get("charging", False))}


@POWER_SOURCES.register("trace")
class TracePower:
    def __init__(self, config: PowerConfig) -> None:
        if config.path is None:
            raise AgentConfigError("adapt.power.path: a trace source needs the trace file")
        self.rows = load_trace(Path(config.path))
        self.clock = config.clock
        self._start: float | None = None
        self._step = 0

    def read(self, now: float) -> PowerReading:
        if self.clock == "step":
            row = self.rows[min(self._step, len(self.rows) - 1)]
            self._step += 1
        else:
            self._start = now if self._start is None else self._start
            elapsed = now - self._start
            row = self.rows[0]
            for candidate in self.rows:
                if candidate["t"] > elapsed:
                    break
                row = candidate
        return PowerReading(row["battery"], bool(row["charging"]))
