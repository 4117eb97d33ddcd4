"""`null`: no model, deterministic logits of the right shape, so fusion/agent logic can be tested fast.

Logits are a fixed seeded projection of the input, so equal inputs give equal outputs and different
inputs (usually) different classes: enough to exercise confidence gating without any ML package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from hgen.runtime.config import StrictModel
from hgen.runtime.engines.base import ENGINES, Engine, TensorSpec


class NullConfig(StrictModel):
    input_shape: tuple[int, ...] = Field(default=(1, 28, 28, 1), min_length=2)
    num_classes: int = Field(default=10, ge=1)
    seed: int = 0


@ENGINES.register("null")
class NullEngine(Engine):
    Config = NullConfig

    def __init__(self, model_path: Path | None, config: NullConfig) -> None:
        del model_path  # the null engine has no model
        self.input_spec = TensorSpec(tuple(config.input_shape))
        self.output_spec = TensorSpec((config.input_shape[0], config.num_classes))
        features = int(np.prod(config.input_shape[1:]))
        rng = np.random.default_rng(config.seed)
        self._projection = rng.standard_normal((features, config.num_classes)).astype(np.float32) / np.sqrt(features)
        self.precision = "float32"

    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1) @ self._projection
