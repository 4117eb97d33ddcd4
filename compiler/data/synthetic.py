"""Colour camera-like image folders made from grey 28x28 images, for tests and benchmarks (no colour photo set here).

How an image is made (seeded, one generator per call):
1. Background: a smooth random colour field (bilinear upsampling of a 4x4 grid of random RGB colours) plus one of
   three textures at a random phase and period: stripes, a checkerboard or speckle noise, at 15-35 % contrast.
2. Object: the grey source image (e.g. a FashionMNIST item) scaled to 45-75 % of the side, tinted with a random
   saturated colour, alpha-blended onto the background with its own intensity as the mask, at a random position.
3. Written as JPEG (quality 80-95) into ROOT/<class name>/<index>.jpg, or with `mixed=True` every fifth as PNG and
   sizes varying from 0.5x to 1.5x the given size (so readers meet mixed formats and sizes).
The result is read back only through the `folder` format, as a user's folder would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    import cv2

    field = cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_LINEAR)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period, phase = rng.uniform(4, 16), rng.uniform(0, 2 * np.pi)
    texture = [np.sin(x * 2 * np.pi / period + phase),
               np.sign(np.sin(x * 2 * np.pi / period + phase) * np.sin(y * 2 * np.pi / period)),
               rng.uniform(-1, 1, (height, width))][int(rng.integers(3))]
    contrast = rng.uniform(0.15, 0.35) * 127
    return np.clip(field + texture[..., None] * contrast, 0, 255)


def compose(item: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One RGB uint8 image: `item` (grey, [0, 1] or uint8) tinted and placed on a textured background."""
    import cv2

    grey = item.astype(np.float32) / (255.0 if item.dtype == np.uint8 else 1.0)
    side = int(min(height, width) * rng.uniform(0.45, 0.75))
    mask = cv2.resize(grey.reshape(grey.shape[:2]), (side, side), interpolation=cv2.INTER_LINEAR)[..., None]
    tint = rng.uniform(0, 1, 3)
    tint = 255 * (tint - tint.min()) / max(float(np.ptp(tint)), 1e-6)  # saturated: one channel high, one low
    image = background(rng, height, width)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    patch = image[top:top + side, left:left + side]
    image[top:top + side, left:left + side] = patch * (1 - mask) + tint * mask
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def write_colour_folder(root: str | Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *,
                        size: int = 96, seed: int = 0, mixed: bool = False) -> Path:
    """Write one file per image under ROOT/<class>/; returns ROOT."""
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, (item, label) in enumerate(zip(images, labels)):
        side = int(size * rng.uniform(0.5, 1.5)) if mixed else size
        height, width = (side, int(side * rng.uniform(0.8, 1.25))) if mixed else (side, side)
        rgb = compose(np.asarray(item), rng, height, width)
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if mixed and index % 5 == 4:
            cv2.imwrite(str(folder / f"{index:06d}.png"), bgr)
        else:
            cv2.imwrite(str(folder / f"{index:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    return root
