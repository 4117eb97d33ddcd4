"""Demands and training length per embedded dataset, so `make demo` meets its demands on whichever data it finds.

Each preset's accuracy demand sits above what the compressed model reaches alone and below what it reaches with
people at the labour budget: the H-DNN has to ask people (which is what the demo shows) and can meet it. The
numbers were measured with the demo's search settings (seed 0, rpi4); the summary prints the preset it used.
"""

from __future__ import annotations

from dataclasses import dataclass

from hgen.compiler.search.objective import Demands


@dataclass(frozen=True)
class DemoPreset:
    """What the demo asks of the compile for one dataset family, and how long it trains the backbone."""

    demands: Demands
    base_epochs: int
    final_epochs: int


# FashionMNIST (and MNIST) at low resolution: 60,000 training images, so few epochs suffice.
FASHION = DemoPreset(Demands(accuracy=0.86, latency_ms=1000.0, storage_mb=0.3, energy_mj=0.2, labour=0.05), 4, 2)
# scikit-learn digits: 1,078 training images, so more epochs. Measured: the compressed model alone 0.887 on the
# test split, with people 0.919 at L = 0.03 (origin 0.894).
DIGITS = DemoPreset(Demands(accuracy=0.90, latency_ms=1000.0, storage_mb=0.3, energy_mj=0.2, labour=0.05), 10, 4)
# A user's own images: nothing is known of them, so budgets are loose and the accuracy bar low; pass your own
# demands (`hgen demo --dataset PATH --accuracy ... --labour ...`) to make the check mean something.
OWN_DATA = DemoPreset(Demands(accuracy=0.5, latency_ms=1000.0, storage_mb=8.0, energy_mj=5.0, labour=0.05), 10, 3)
PRESETS = {"fashion-mnist": FASHION, "mnist": FASHION, "digits": DIGITS}


def preset_for(base: str) -> DemoPreset:
    """The preset of a resolved dataset base (`auto` is resolved before this is asked); any other base is a
    user's own data set."""
    return PRESETS.get(base, OWN_DATA)
