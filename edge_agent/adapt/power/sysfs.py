"""`sysfs`: the kernel's power supply class. Every supply of `type` Battery contributes its `capacity` (percent);
an online `Mains`/`USB` supply or a battery `status` of Charging/Full counts as charging."""

from __future__ import annotations

from pathlib import Path

from hgen.edge_agent.adapt.power import POWER_SOURCES, PowerReading
from hgen.edge_agent.config import PowerConfig

CHARGING = {"charging", "full"}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@POWER_SOURCES.register("sysfs")
class SysfsPower:
    def __init__(self, config: PowerConfig) -> None:
        self.root = Path(config.path or "/sys/class/power_supply")

    def read(self, now: float) -> PowerReading:
        del now
        if not self.root.is_dir():
            return PowerReading(None, False, f"{self.root} not found: no battery")
        levels, charging = [], False
        for supply in sorted(self.root.iterdir()):
            kind = (_read(supply / "type") or "").lower()
            if kind == "battery":
                capacity = _read(supply / "capacity")
                if capacity is not None and capacity.lstrip("-").isdigit():
                    levels.append(min(100, max(0, int(capacity))) / 100.0)
                charging |= (_read(supply / "status") or "").lower() in CHARGING
            elif kind in {"mains", "usb", "usb_c", "usb_pd"}:
                charging |= _read(supply / "online") == "1"
        if not levels:
            return PowerReading(None, charging, "no battery in power_supply")
        return PowerReading(sum(levels) / len(levels), charging)
