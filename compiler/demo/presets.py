"""Demands and training length per embedded dataset, so `make demo` meets its demands on whichever data it finds.

Each preset's accuracy demand sits above what the compressed model reaches alone and below what it reaches with
people at the labour budget: the H-DNN has to ask people (which is what the demo shows) and can meet it. The
numbers were measured with the demo's search settings (seed 0, rpi4); the summary prints the preset it used. Each
built-in data set declares its own (`DemoDefaults` on its file in `hgen.compiler.data.builtins`); a base without
one (a user's own data set) gets `OWN_DATA`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hgen.compiler.data.builtins import BUILTINS, DemoDefaults
from hgen.compiler.search.objective import Demands


@dataclass(frozen=True)
class DemoPreset:
    """What the demo asks of the compile for one dataset family, and how long it trains the backbone."""

    demands: Demands
    base_epochs: int
    final_epochs: int


def _preset(defaults: DemoDefaults) -> DemoPreset:
    demands = Demands(accuracy=defaults.accuracy, latency_ms=defaults.latency_ms, storage_mb=defaults.storage_mb,
                      energy_mj=defaults.energy_mj, labour=defaults.labour)
    return DemoPreset(demands, defaults.base_epochs, defaults.final_epochs)


# A user's own images: nothing is known of them, so budgets are loose and the accuracy bar low; pass your own
# demands (`hgen demo --dataset PATH --accuracy ... --labour ...`) to make the check mean something.
OWN_DATA = DemoPreset(Demands(accuracy=0.5, latency_ms=1000.0, storage_mb=8.0, energy_mj=5.0, labour=0.05), 10, 3)


def preset_for(base: str) -> DemoPreset:
    """The preset a resolved dataset base declares (`auto` is resolved before this is asked); any other base is a
    user's own data set."""
    defaults = BUILTINS.get(base).demo if base in BUILTINS else None
    return OWN_DATA if defaults is None else _preset(defaults)


FASHION = preset_for("fashion-mnist")  # FashionMNIST (and MNIST) at low resolution
DIGITS = preset_for("digits")  # scikit-learn digits
