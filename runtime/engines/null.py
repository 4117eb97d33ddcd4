"""`null`: no model, deterministic logits of the right shape, so fusion/agent logic can be tested fast.

Logits are a fixed seeded projection of the input, so equal inputs give equal outputs and different
inputs (usually) different classes: enough to exercise confidence gating without any ML package. `output_shape`
(e.g. (1, S, S, 5 + classes) for an H-YOLO grid) reshapes the projection; by default it is (batch, num_classes).
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
    output_shape: tuple[int, ...] | None = Field(default=None, min_length=2, title="Output shape incl. batch "
                                                 "(default: (batch, num_classes))")


@ENGINES.register("null")
class NullEngine(Engine):
    Config = NullConfig

    def __init__(self, model_path: Path | None, config: NullConfig) -> None:
        del model_path  # the null engine has no model
        self.input_spec = TensorSpec(tuple(config.input_shape))
        self.output_spec = TensorSpec(tuple(config.output_shape or (config.input_shape[0], config.num_classes)))
        features = int(np.prod(config.input_shape[1:]))
        outputs = int(np.prod(self.output_spec.shape[1:]))
        rng = np.random.default_rng(config.seed)
        self._projection = rng.standard_normal((features, outputs)).astype(np.float32) / np.sqrt(features)
        self.precision = "float32"

    def _run_fixed(self, batch: np.ndarray) -> np.ndarray:
        out = batch.reshape(len(batch), -1) @ self._projection
        return out.reshape(len(batch), *self.output_spec.shape[1:])
