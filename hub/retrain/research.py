"""Re-search on request: the H-Gen search runs again (new compression plan and tau) with the people's labels.

A retrain normally keeps the deployed plan and tau (enhancement training starts from the deployed weights). When
an operator asks for a re-search, the hgen-compile settings the model was built with (`compile_config`) run again
on the original data with the kept human-labelled samples added to its training split; the winner then faces the
same acceptance check and publishing as any retrain, carrying its own plan and tau.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hgen.hub.errors import RetrainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Searched:
    """The search's fine-tuned winner, ready for the acceptance check (the fields `Enhanced` has) + plan and tau."""

    model: Any
    temperature: float
    seconds: float
    train_samples: int
    tau: float
    plan: dict[str, Any]
    summary: dict[str, Any]
    accuracy_demand: float  # what the new plan and tau were searched to meet
    style: Mapping[str, float] | None = None  # a re-search renders no original image in the field's style


def load_compile_config(path: Path | None, model_name: str, out: Path) -> Any:
    """The model's hgen-compile settings, writing into `out` and without a bundle (the hub lowers and signs)."""
    from hgen.compiler.compile import CompileConfig
    from hgen.runtime.config import load_config_file
    from hgen.runtime.errors import ConfigError

    if path is None:
        raise RetrainError(f"a re-search of {model_name!r} needs retrain.models[].compile_config (the hgen-compile "
                           "settings it was compiled with)")
    try:
        config = load_config_file(CompileConfig, path)
    except ConfigError as exc:
        raise RetrainError(f"compile_config of {model_name!r}: {exc}") from None
    return config.model_copy(update={"out": str(out), "bundle": False})


def with_people(data: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """The original dataset with the people's labelled images appended to its training split."""
    from hgen.compiler.data import Split
    from hgen.compiler.data.lazy import concat

    train = Split(concat([data.train.x, x.astype(data.train.x.dtype)]),
                  np.concatenate([data.train.y, y.astype(data.train.y.dtype)]))
    return replace(data, train=train)


def research(compile_config: Any, data: Any, x: np.ndarray, y: np.ndarray) -> Searched:
    """Run the search on `data` + (x, y); returns the fine-tuned winner with its plan, tau and temperature."""
    from hgen.compiler.compile import compile_hdnn
    from hgen.compiler.models import load_model_file

    start = time.perf_counter()
    augmented = with_people(data, x, y)
    result = compile_hdnn(compile_config, lambda message: log.info("re-search: %s", message), data=augmented)
    chosen = json.loads((result.out / "plan.json").read_text())
    return Searched(load_model_file(result.out / "model.keras"), float(chosen["temperature"]),
                    time.perf_counter() - start, len(augmented.train), float(chosen["tau"]),
                    {"layers": chosen["plan"], "ratios": chosen["ratios"]}, result.summary,
                    float(compile_config.demands.accuracy))
