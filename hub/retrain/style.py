"""The field's style on the original training images (issue 18): a camera in the field changes how every picture
looks (a darker tone curve at night, sensor noise), and a few hundred human labels teach a model that change far
less than the tens of thousands of original images it was trained on could, if they looked like the field.

So before a retrain on a field unlike the originals (most of its labelled images outside their familiarity
ranges, `hgen.runtime.familiarity`), the hub estimates two things from the human-labelled field images it holds,
against the original training images: the sensor noise each adds (Immerkaer's estimate, so only the field's excess
noise is added) and a tone curve per channel (quantile matching, after the noise, so a curve is fitted to what the
noise left). A share of the original images is rendered through both and keeps its true label and the teacher's
soft targets of the clean image: the model learns the classes it knew under the field's conditions. The rest
stays clean so the original test split holds (tools/bench/results/style_probe.md, class-hue folder: all rendered
lost 4-13 points of it, half under 1).

Photometric only: blur and lower resolution are not modelled (a low-resolution field estimates no added noise
and a near-identity curve, so its retrain is as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hgen.compiler.data.lazy import concat
from hgen.hub.config import FieldConfig
from hgen.runtime.familiarity import fit_familiarity

# Images (per side) the estimates read: quantiles and noise settle well before this many.
ESTIMATE_IMAGES = 2000
LEVELS = 257  # quantiles per tone curve


@dataclass(frozen=True)
class FieldStyle:
    """What rendering adds: Gaussian noise of `noise` (pixels in [0, 1]), then one tone curve per channel
    (`source` quantiles of the noisy originals mapped onto the field's `target` quantiles)."""

    noise: float
    source: np.ndarray  # [channels, LEVELS], strictly increasing
    target: np.ndarray  # [channels, LEVELS]
    field_noise: float
    original_noise: float


@dataclass(frozen=True)
class Styled:
    """The originals with `rendered` of them in the field's style, those first: `order` holds each row's index in
    the originals (None: `x` is the originals as they were, lazy if they were), so labels and teacher targets are
    put in the same order with `reorder`. Only the rendered rows are materialised; the rest stay a lazy view of a
    user's data set (`hgen.compiler.data.lazy`)."""

    x: Any
    rendered: int
    style: FieldStyle | None
    field_unfamiliar: float | None = None  # share of the field images outside the originals' ranges, if checked
    order: np.ndarray | None = None

    def reorder(self, values: Any) -> Any:
        """`values` per original row (an array, or a sequence such as boxes per image) in the order of `x`."""
        if self.order is None:
            return values
        if isinstance(values, np.ndarray):
            return values[self.order]
        return [values[int(i)] for i in self.order]

    def summary(self) -> dict[str, float] | None:
        """What the run's metrics record (None: not checked, off or too few field images)."""
        if self.field_unfamiliar is None:
            return None
        out = {"rendered": self.rendered, "field_unfamiliar": round(self.field_unfamiliar, 4)}
        if self.style is not None:
            out |= {"added_noise": round(self.style.noise, 4), "field_noise": round(self.style.field_noise, 4),
                    "original_noise": round(self.style.original_noise, 4)}
        return out


def noise_sigma(x: np.ndarray) -> float:
    """Median over images and channels of Immerkaer's noise estimate (a 3x3 Laplacian-difference mask, which
    cancels smooth image content); [n, H, W, C] in [0, 1]. Images smaller than 3x3 give 0."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[1] < 3 or x.shape[2] < 3 or not len(x):
        return 0.0
    h, w = x.shape[1] - 2, x.shape[2] - 2
    weights = ((1, -2, 1), (-2, 4, -2), (1, -2, 1))
    r = sum(weights[i][j] * x[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3))
    per_image_channel = np.abs(r).sum(axis=(1, 2)) * np.sqrt(np.pi / 2) / (6.0 * h * w)
    return float(np.median(per_image_channel))


def tone_curves(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel quantiles of both sets, the source's nudged strictly increasing so `np.interp` is a function
    (flat runs: many pixels at 0 or 1)."""
    levels = np.linspace(0.0, 1.0, LEVELS)
    channels = source.shape[-1]
    src = np.stack([np.quantile(source[..., c], levels) for c in range(channels)])
    dst = np.stack([np.quantile(target[..., c], levels) for c in range(channels)])
    return src + np.arange(LEVELS) * 1e-7, dst


def add_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return np.array(x, np.float32, copy=True)
    return np.clip(x + rng.normal(0.0, sigma, x.shape).astype(np.float32), 0.0, 1.0)


def fit_style(original: np.ndarray, field: np.ndarray, seed: int = 0) -> FieldStyle:
    """The field's excess noise and tone curves against `original` (both [n, H, W, C] in [0, 1], same shape)."""
    original = np.asarray(original[:ESTIMATE_IMAGES], np.float32)
    field = np.asarray(field[:ESTIMATE_IMAGES], np.float32)
    original_noise, field_noise = noise_sigma(original), noise_sigma(field)
    noise = float(np.sqrt(max(0.0, field_noise**2 - original_noise**2)))
    noisy = add_noise(original, noise, np.random.default_rng(seed))
    source, target = tone_curves(noisy, field)
    return FieldStyle(noise, source, target, field_noise, original_noise)


def render(x: np.ndarray, style: FieldStyle, rng: np.random.Generator) -> np.ndarray:
    """`x` [n, H, W, C] in [0, 1] as the field's camera would show it."""
    out = add_noise(np.asarray(x, np.float32), style.noise, rng)
    for c in range(out.shape[-1]):
        out[..., c] = np.interp(out[..., c], style.source[c], style.target[c])
    return out.astype(np.float32)


def in_field_style(original: Any, field: np.ndarray, config: FieldConfig, seed: int = 0) -> Styled:
    """`original` (an array or lazy images) with a seeded `config.style_share` of its rows rendered in the style
    of the `field` images (human-labelled, as devices sent them); unchanged when the share is 0, there are fewer
    than `config.style_min_images` field images, their shape differs from the originals', or fewer than
    `config.style_min_unfamiliar` of them fall outside the originals' familiarity ranges (a field like the
    training data: its labelled frames are the gate's hard cases, whose tones are no camera's)."""
    count = int(round(config.style_share * len(original)))
    if count == 0 or len(field) < config.style_min_images or np.shape(field)[1:] != tuple(original.shape[1:]):
        return Styled(original, 0, None)
    rng = np.random.default_rng(seed)
    sample = np.asarray(original[np.sort(rng.permutation(len(original))[:ESTIMATE_IMAGES])], np.float32)
    unlike = float(np.mean(fit_familiarity(sample).unfamiliar(np.asarray(field, np.float32))))
    if unlike < config.style_min_unfamiliar:
        return Styled(original, 0, None, unlike)
    style = fit_style(sample, field, seed)
    chosen = np.zeros(len(original), bool)
    chosen[rng.choice(len(original), count, replace=False)] = True
    rows, rest = np.flatnonzero(chosen), np.flatnonzero(~chosen)
    rendered = render(np.asarray(original[rows], np.float32), style, rng)
    x = concat([rendered, original[rest]]) if len(rest) else rendered
    return Styled(x, count, style, unlike, np.concatenate([rows, rest]))
