"""Where the device reads its battery: one reader per file, registered by name in `POWER_SOURCES`.

`sysfs` reads Linux's `/sys/class/power_supply` (a Raspberry Pi on mains has no battery there: battery None, which
the selector treats as full); `trace` replays a recorded or made-up trace (tests, benchmarks, demos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hgen.edge_agent.config import PowerConfig
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class PowerReading:
    battery: float | None  # 0..1, None: no battery (mains) or unreadable
    charging: bool
    detail: str = ""  # why the reading is missing, shown on status


class PowerSource(Protocol):
    def read(self, now: float) -> PowerReading:
        """The battery now (`now`: the agent's monotonic clock)."""


POWER_SOURCES: Registry[type] = Registry("power source", package=__name__)


def open_power(config: PowerConfig) -> PowerSource:
    return POWER_SOURCES.get(config.kind)(config)
