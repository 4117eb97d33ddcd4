"""Free memory as the kernel reports it (MemAvailable): the device's adaptation weighs it, the compiler checks a data
set fits before it makes float32 of it."""

from __future__ import annotations

from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def free_memory_mb(meminfo: Path = MEMINFO) -> float | None:
    """MemAvailable in MB, or None where /proc/meminfo is not there."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None
