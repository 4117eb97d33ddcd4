"""Device profiles as data: the paper's three devices plus the host.

Latency for a device we cannot run here is an ESTIMATE: the candidate's LiteRT latency measured on this host
(batch 1, median) times the profile's `latency_scale`. The scales are our assumption of single-thread inference
speed relative to the x86-64 host core, from the processors' clock and micro-architecture class (in-order Cortex-A7
at 1.2 GHz ~ 30x slower than a modern server core on small conv nets; out-of-order Cortex-A72 at 1.5 GHz ~ 8x;
Kirin 970's Cortex-A73 at 2.36 GHz ~ 5x). They are not measurements; every report that uses them says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from hgen.compiler.errors import UnknownNameError
from hgen.runtime.registry import Registry


@dataclass(frozen=True)
class DeviceProfile:
    """What the search needs to know of a device."""

    name: str
    description: str
    processor: str
    battery_mah: float
    cache_kb: int
    latency_scale: float
    target: str
    measured: bool = False

    def latency_ms(self, host_ms: float) -> float:
        return host_ms * self.latency_scale


DEVICES: Registry[DeviceProfile] = Registry("device", UnknownNameError)
for _profile in (
    DeviceProfile("watch", "Device 1: smartwatch", "ARM Cortex-A7 1.2 GHz", 1000, 512, 30.0, "armv7"),
    DeviceProfile("phone", "Device 2: smartphone", "HiSilicon Kirin 970 (Cortex-A73 2.36 GHz)", 3400, 2048, 5.0,
                  "android-arm64"),
    DeviceProfile("rpi4", "Device 3: Raspberry Pi 4B", "ARM Cortex-A72 1.5 GHz", 3800, 1024, 8.0, "rpi4"),
    DeviceProfile("host", "this machine", "x86-64 host CPU", 3800, 32768, 1.0, "x86_64", measured=True),
):
    DEVICES.add(_profile.name, _profile)


def get_device(name: str) -> DeviceProfile:
    return DEVICES.get(name)
