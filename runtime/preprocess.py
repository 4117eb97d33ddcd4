"""Image -> model input, one implementation for the compiler's data pipeline and the device (one source of truth).

The compiler decodes files with Pillow, the device gets frames from OpenCV (BGR); both then go through the same
steps here: alpha composited on black, colour or grey, resize into the input (`stretch`, or `letterbox`: fit and
pad), then `x * scale + offset`. Resizing uses OpenCV (INTER_AREA when shrinking, INTER_LINEAR when enlarging),
imported lazily so numpy-only users of the runtime never load it. The bundle's `InputSpec` records the choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hgen.runtime.errors import InvalidInputError

ResizeMode = Literal["stretch", "letterbox"]


class FrameShapeError(InvalidInputError):
    """A frame that cannot become the model input (empty, or a channel count we cannot convert)."""


@dataclass(frozen=True)
class Placement:
    """Where the resized image sits in the input, in input pixels (the whole input under `stretch`)."""

    left: int
    top: int
    width: int
    height: int


def placement(width: int, height: int, out_width: int, out_height: int, resize: ResizeMode) -> Placement:
    """How an image of (width, height) maps into an (out_width, out_height) input."""
    if resize == "stretch":
        return Placement(0, 0, out_width, out_height)
    scale = min(out_width / width, out_height / height)
    new_w = max(1, min(out_width, round(width * scale)))
    new_h = max(1, min(out_height, round(height * scale)))
    return Placement((out_width - new_w) // 2, (out_height - new_h) // 2, new_w, new_h)


def fit(image: np.ndarray, out_height: int, out_width: int, resize: ResizeMode = "stretch",
        pad_value: int = 0) -> np.ndarray:
    """uint8 [h, w, c] -> uint8 [out_height, out_width, c]."""
    import cv2

    height, width = image.shape[:2]
    box = placement(width, height, out_width, out_height, resize)
    shrink = box.width * box.height < width * height
    resized = image if (box.width, box.height) == (width, height) else cv2.resize(
        image, (box.width, box.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[..., None]
    if resize == "stretch":
        return np.ascontiguousarray(resized, dtype=np.uint8)
    out = np.full((out_height, out_width, resized.shape[2]), pad_value, np.uint8)
    out[box.top:box.top + box.height, box.left:box.left + box.width] = resized
    return out


def composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """uint8 [h, w, 4] RGBA -> uint8 [h, w, 3]: transparent pixels become black (rounded, as the compiler does)."""
    rgba = rgba.astype(np.float32)
    return np.clip(rgba[..., :3] * (rgba[..., 3:] / 255.0) + 0.5, 0, 255).astype(np.uint8)


def grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 L with ITU-R 601-2 luma, as Pillow's convert("L") computes it."""
    weights = np.array([19595, 38470, 7471], np.uint32)  # 0.299, 0.587, 0.114 in 16-bit fixed point
    return ((rgb.astype(np.uint32) @ weights + 0x8000) >> 16).astype(np.uint8)[..., None]


def eight_bits(image: np.ndarray) -> np.ndarray:
    """16-bit pixels -> 8 bits by their high byte, as OpenCV and Pillow reduce 16-bit files (a 16-bit PNG or TIFF
    trains and runs as the same 8-bit image); uint8 passes through, other depths are refused."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise FrameShapeError(f"frame dtype {image.dtype} is not uint8 or uint16")


def frame_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """An OpenCV frame (grey, BGR or BGRA; 8 or 16 bits) -> uint8 [h, w, channels] in RGB or L order."""
    if frame is None or frame.size == 0 or frame.ndim not in (2, 3):
        raise FrameShapeError(f"frame is empty or not an image (shape {getattr(frame, 'shape', None)})")
    frame = eight_bits(frame)
    image = frame[..., None] if frame.ndim == 2 else frame
    have = image.shape[2]
    if have == 4:
        image = composite_on_black(image[..., [2, 1, 0, 3]])
    elif have == 3:
        image = image[..., ::-1]
    elif have != 1:
        raise FrameShapeError(f"frame has {have} channels, the model wants {channels}")
    if channels == 1:
        return image if image.shape[2] == 1 else grey(image)
    if channels == 3:
        return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else np.ascontiguousarray(image)
    raise FrameShapeError(f"the model wants {channels} channels; frames can become 1 (grey) or 3 (RGB)")


def normalise(image: np.ndarray, scale: float, offset: float = 0.0) -> np.ndarray:
    """uint8 -> float32 model input: `x * scale + offset` (scale 1/255, offset 0 gives [0, 1])."""
    return image.astype(np.float32) * np.float32(scale) + np.float32(offset)
