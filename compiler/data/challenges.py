"""The paper's hard conditions, and two a camera meets, as deterministic seeded transforms on images in [0, 1].

Images are [n, h, w, c] float32 of any size and channel count (grey or RGB). Each variant is registered by name
with a typed parameter model, so a spec string like `fashion-mnist:lowres?factor=4` is validated key by key.
`noise` and `lowres` are the paper's; `lowlight` (a gamma curve with optional sensor noise) and `blur` (motion blur
along a seeded direction per image) are the extra camera conditions.
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
    """A named transform with its parameter model; `identity` marks the one that leaves images as they are, so
    readers skip the per-image seeded pass for it without knowing its name."""

    name: str
    params: type[StrictModel]
    apply: Callable[[np.ndarray, np.random.Generator, Any], np.ndarray]
    paper_name: str
    identity: bool = False


VARIANTS: Registry[Variant] = Registry("dataset variant", UnknownNameError)


def _clean(x: np.ndarray, rng: np.random.Generator, params: NoParams) -> np.ndarray:
    return x


def _noise(x: np.ndarray, rng: np.random.Generator, params: NoiseParams) -> np.ndarray:
    noisy = x + rng.normal(0.0, np.sqrt(params.variance), size=x.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


class LowLightParams(StrictModel):
    gamma: float = Field(2.5, ge=1.0, le=10.0, title="Gamma of the darkening curve x ** gamma (1 = unchanged)")
    noise: float = Field(0.02, ge=0.0, le=0.5, title="Std of the Gaussian sensor noise added after darkening")


class BlurParams(StrictModel):
    length: int = Field(9, ge=2, le=64, title="Length of the motion-blur kernel in pixels (at 28 px, scaled with "
                        "the image's larger side)")
    angle: float | None = Field(None, ge=0.0, lt=180.0, title="Direction in degrees; default: seeded per image")


def _lowres(x: np.ndarray, rng: np.random.Generator, params: LowResParams) -> np.ndarray:
    import cv2

    n, h, w, c = x.shape
    small = (max(1, w // params.factor), max(1, h // params.factor))
    out = np.empty_like(x)
    for i in range(n):
        low = cv2.resize(x[i], small, interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, c)
    return np.clip(out, 0.0, 1.0)


def _lowlight(x: np.ndarray, rng: np.random.Generator, params: LowLightParams) -> np.ndarray:
    dark = np.power(np.clip(x, 0.0, 1.0), params.gamma, dtype=np.float32)
    if params.noise > 0:
        dark = dark + rng.normal(0.0, params.noise, size=x.shape).astype(np.float32)
    return np.clip(dark, 0.0, 1.0).astype(np.float32)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised line kernel of `length` pixels at `angle` degrees."""
    import cv2

    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length), flags=cv2.INTER_LINEAR)
    return kernel / max(float(kernel.sum()), 1e-6)


def _blur(x: np.ndarray, rng: np.random.Generator, params: BlurParams) -> np.ndarray:
    import cv2

    n, h, w, c = x.shape
    length = max(2, round(params.length * max(h, w) / 28))
    out = np.empty_like(x)
    for i in range(n):
        angle = params.angle if params.angle is not None else float(rng.uniform(0.0, 180.0))
        blurred = cv2.filter2D(x[i], -1, motion_kernel(length, angle), borderType=cv2.BORDER_REFLECT)
        out[i] = blurred.reshape(h, w, c)
    return np.clip(out, 0.0, 1.0)


VARIANTS.add("clean", Variant("clean", NoParams, _clean, "clean", identity=True))
VARIANTS.add("noise", Variant("noise", NoiseParams, _noise, "Gaussian noise"))
VARIANTS.add("lowres", Variant("lowres", LowResParams, _lowres, "low resolution"))
VARIANTS.add("lowlight", Variant("lowlight", LowLightParams, _lowlight, "low light (gamma)"))
VARIANTS.add("blur", Variant("blur", BlurParams, _blur, "motion blur"))
