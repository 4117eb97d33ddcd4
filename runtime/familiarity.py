"""The familiarity check: does a frame look like the images the model was trained on?

A confidence gate trusts the model's own certainty, and a model deployed into a field its training data never
showed (sensor noise, low light, low resolution) is often certain and wrong: it then asks nobody just where it is
worst. Three statistics of the model input catch those conditions cheaply on any device, independent of the model:

- brightness: the mean of the input;
- contrast: its standard deviation;
- detail: the mean absolute 4-neighbour Laplacian of the grey image (up with noise, down with blur or upscaling).

The compile stores, per statistic, the range its training images span between the `quantile` and 1 - `quantile`
(so about 2 x 3 x quantile of training-like frames fall outside by chance). A frame outside any range is
*unfamiliar*. The device sends every frame under tau, and a drawn share (`UNFAMILIAR_SHARE`) of the unfamiliar
frames it is confident on, within the same labour limit: under a binding labour demand, asking about every
unfamiliar frame spent it in stream order instead of on the frames the model is unsure of (issue 18: D5's fused
accuracy -5.2 points at deployment), while a known share is enough for the hub to weight them as the field (each
stands for 1 / share frames, as an audit does). When the hub publishes a
retrain that learned field frames (and passed the acceptance check on held-out field labels), it widens the ranges
by those frames: from then on the model's confidence decides for them, so people are asked less as the model
learns the field. The phone's port (android_bridge/src/familiarity.ts) is checked against golden vectors written
from this module.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from hgen.runtime.config import StrictModel
from hgen.runtime.errors import InvalidInputError

DEFAULT_QUANTILE = 0.001
UNFAMILIAR_SHARE = 0.2  # the devices' `gate.unfamiliar_share` default, which the hub's `field` weighting mirrors


class StatRange(StrictModel):
    """The familiar values of one statistic, bounds included."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> StatRange:
        if not self.low <= self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self

    def outside(self, values: np.ndarray) -> np.ndarray:
        return (values < self.low) | (values > self.high)

    def union(self, other: StatRange) -> StatRange:
        return StatRange(low=min(self.low, other.low), high=max(self.high, other.high))


def image_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of a [n, h, w, c] model input batch (h, w >= 3): brightness, contrast and detail, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] < 3 or x.shape[2] < 3:
        raise InvalidInputError(f"the familiarity check needs images [n, h>=3, w>=3, c], got shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    grey = x.mean(axis=3)
    laplacian = (4.0 * grey[:, 1:-1, 1:-1] - grey[:, :-2, 1:-1] - grey[:, 2:, 1:-1]
                 - grey[:, 1:-1, :-2] - grey[:, 1:-1, 2:])
    return {"brightness": flat.mean(axis=1), "contrast": flat.std(axis=1),
            "detail": np.abs(laplacian).reshape(x.shape[0], -1).mean(axis=1)}


def _range(values: np.ndarray, quantile: float) -> StatRange:
    low, high = np.quantile(values, [quantile, 1.0 - quantile])
    return StatRange(low=float(low), high=float(high))


class Familiarity(StrictModel):
    """The manifest's `familiarity`: the training images' range of each statistic."""

    brightness: StatRange
    contrast: StatRange
    detail: StatRange
    quantile: float = Field(DEFAULT_QUANTILE, ge=0.0, lt=0.5, title="the share of training images left outside each "
                                                                      "bound when the ranges were fitted")

    def ranges(self) -> dict[str, StatRange]:
        return {"brightness": self.brightness, "contrast": self.contrast, "detail": self.detail}

    def unfamiliar(self, x: np.ndarray) -> np.ndarray:
        """[n] bool: the images with any statistic outside its range."""
        stats = image_stats(x)
        flags = np.zeros(len(stats["brightness"]), bool)
        for name, bounds in self.ranges().items():
            flags |= bounds.outside(stats[name])
        return flags

    def widened(self, x: np.ndarray) -> Familiarity:
        """These ranges joined with those of `x` (images the model has now been trained on) at the same quantile."""
        if len(x) == 0:
            return self
        other = fit_familiarity(x, self.quantile)
        return Familiarity(brightness=self.brightness.union(other.brightness),
                           contrast=self.contrast.union(other.contrast),
                           detail=self.detail.union(other.detail), quantile=self.quantile)


def fit_familiarity(x: np.ndarray, quantile: float = DEFAULT_QUANTILE, chunk: int = 4096) -> Familiarity:
    """The ranges of a set of training images (read in chunks, so a lazily decoded folder is not held at once)."""
    if len(x) == 0:
        raise InvalidInputError("the familiarity check needs at least one training image")
    parts = [image_stats(np.asarray(x[start:start + chunk])) for start in range(0, len(x), chunk)]
    stats = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return Familiarity(**{name: _range(values, quantile) for name, values in stats.items()}, quantile=quantile)


def unfamiliar_frames(familiarity: Familiarity | None, x: np.ndarray) -> np.ndarray:
    """[n] bool; all False for a bundle without the check (compiled before it existed, or with it turned off)."""
    if familiarity is None:
        return np.zeros(len(x), bool)
    return familiarity.unfamiliar(x)


def asked_unfamiliar(unfamiliar: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Which unfamiliar frames a device asks people about at `share` (a seeded draw per frame): for measuring what a
    device does on a labelled set (the agent draws with its own generator, frame by frame)."""
    flags = np.asarray(unfamiliar, bool)
    return flags & (np.random.default_rng(seed).random(flags.shape) < share)
