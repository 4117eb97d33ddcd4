"""The paper's hard conditions as deterministic, seeded transforms on images in [0, 1], shape [n, 28, 28, 1].

Each variant is registered by name with a typed parameter model, so a spec string like
`fashion-mnist:lowres?factor=4` is validated key by key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from hgen.compiler.errors import UnknownNameError
from hgen.runtime.config import StrictModel
from hgen.runtime.registry import Registry


class NoParams(StrictModel):
    """The clean variant takes no parameters."""


class NoiseParams(StrictModel):
    variance: float = Field(0.2, gt=0.0, le=1.0, title="Variance of the additive Gaussian noise (paper: 0.2)")


class LowResParams(StrictModel):
    factor: int = Field(
        4, ge=2, le=14,
        title="Downscale factor before the bilinear upscale back to full size",
        description=(
            "Default 4 (28x28 -> 7x7 -> 28x28). Factor 2 (14x14) keeps almost every FashionMNIST class separable, "
            "so a LeNet-5 loses only about a point and there is little for people to fix; factor 4 removes the "
            "texture and fine shape that separate shirt / T-shirt / pullover / coat, which is the paper's "
            "low-resolution challenge: a clear accuracy drop concentrated in confusable classes."
        ),
    )


@dataclass(frozen=True)
class Variant:
    """A named transform with its parameter model."""

    name: str
    params: type[StrictModel]
    apply: Callable[[np.ndarray, np.random.Generator, Any], np.ndarray]
    paper_name: str


VARIANTS: Registry[Variant] = Registry("dataset variant", UnknownNameError)


def _clean(x: np.ndarray, rng: np.random.Generator, params: NoParams) -> np.ndarray:
    return x


def _noise(x: np.ndarray, rng: np.random.Generator, params: NoiseParams) -> np.ndarray:
    noisy = x + rng.normal(0.0, np.sqrt(params.variance), size=x.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _lowres(x: np.ndarray, rng: np.random.Generator, params: LowResParams) -> np.ndarray:
    import cv2

    n, h, w, c = x.shape
    small = (max(1, w // params.factor), max(1, h // params.factor))
    out = np.empty_like(x)
    for i in range(n):
        low = cv2.resize(x[i, :, :, 0], small, interpolation=cv2.INTER_AREA)
        out[i, :, :, 0] = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


VARIANTS.add("clean", Variant("clean", NoParams, _clean, "clean"))
VARIANTS.add("noise", Variant("noise", NoiseParams, _noise, "Gaussian noise"))
VARIANTS.add("lowres", Variant("lowres", LowResParams, _lowres, "low resolution"))
