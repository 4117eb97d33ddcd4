"""YUV planes -> RGB with one integer rule, the same on every device (the agent here, the phone's page in
`android_bridge/src/yuv.ts`), so both feed the model the same pixels from the same camera frame.

Decoders each convert YUV their own way (FFmpeg's swscale, Chromium's libyuv, a phone's GPU) and differ by a grey
level on some pixels, which is enough to move a frame whose confidence sits near tau to the other side of the
gate. Cameras and YUV files give the planes themselves, so devices that read them convert here instead:

    y' = Y - 16 (limited range) or Y (full range);  u = U - 128;  v = V - 128
    R = clamp((cy*y' + crv*v           + 2^15) >> 16)
    G = clamp((cy*y' - cgu*u - cgv*v   + 2^15) >> 16)
    B = clamp((cy*y' + cbu*u           + 2^15) >> 16)

with the BT.601 or BT.709 matrix's coefficients in 16-bit fixed point (`COEFFICIENTS`: round(65536 x the exact
value); limited range scales luma by 255/219 and chroma by 255/224), `>>` rounding towards minus infinity, and
4:2:0 chroma taken from the sample of each 2x2 block (no chroma filter, so nothing to round differently). Frames
that say nothing about their colour space are BT.601 limited range, as y4m files and most decoders assume.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from hgen.runtime.errors import InvalidInputError

Matrix = Literal["bt601", "bt709"]

# (matrix, full range) -> (cy, crv, cgu, cgv, cbu), each round(65536 x coefficient); android_bridge/src/yuv.ts
# holds the same integers and the golden vectors check it against this module
COEFFICIENTS: dict[tuple[str, bool], tuple[int, int, int, int, int]] = {
    ("bt601", False): (76309, 104597, 25675, 53279, 132201),
    ("bt601", True): (65536, 91881, 22553, 46802, 116130),
    ("bt709", False): (76309, 117489, 13975, 34925, 138438),
    ("bt709", True): (65536, 103206, 12276, 30679, 121609),
}


class YuvError(InvalidInputError):
    """Planes that do not make a 4:2:0 image, or a colour space this rule does not cover."""


def chroma_shape(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of each 4:2:0 chroma plane of a height x width frame: one sample per 2x2 block."""
    return (height + 1) // 2, (width + 1) // 2


def coefficients(matrix: str, full_range: bool) -> tuple[int, int, int, int, int]:
    try:
        return COEFFICIENTS[(matrix, full_range)]
    except KeyError:
        raise YuvError(f"no YUV rule for matrix {matrix!r} (have bt601, bt709)") from None


def i420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str = "bt601",
                full_range: bool = False) -> np.ndarray:
    """uint8 planes Y (h, w), U and V (ceil(h/2), ceil(w/2)) -> uint8 RGB (h, w, 3)."""
    height, width = _check(y, u, v)
    cy, crv, cgu, cgv, cbu = coefficients(matrix, full_range)
    luma = cy * (y.astype(np.int32) - (0 if full_range else 16))
    cu = np.repeat(np.repeat(u.astype(np.int32) - 128, 2, axis=0), 2, axis=1)[:height, :width]
    cv = np.repeat(np.repeat(v.astype(np.int32) - 128, 2, axis=0), 2, axis=1)[:height, :width]
    half = 1 << 15
    rgb = np.stack([luma + crv * cv + half, luma - cgu * cu - cgv * cv + half, luma + cbu * cu + half], axis=-1)
    return np.clip(rgb >> 16, 0, 255).astype(np.uint8)


def nv12_to_rgb(y: np.ndarray, uv: np.ndarray, matrix: str = "bt601", full_range: bool = False) -> np.ndarray:
    """uint8 Y (h, w) and interleaved UV (ceil(h/2), 2*ceil(w/2)) -> uint8 RGB (h, w, 3)."""
    if uv.ndim != 2 or uv.shape[1] % 2:
        raise YuvError(f"NV12 chroma plane must be (h/2, 2*(w/2)), got {uv.shape}")
    return i420_to_rgb(y, uv[:, 0::2], uv[:, 1::2], matrix, full_range)


def _check(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[int, int]:
    if y.ndim != 2 or y.size == 0 or any(p.dtype != np.uint8 for p in (y, u, v)):
        raise YuvError(f"Y must be a non-empty uint8 (h, w) plane, got {y.shape} {y.dtype}")
    height, width = y.shape
    chroma = chroma_shape(height, width)
    if u.shape != chroma or v.shape != chroma:
        raise YuvError(f"4:2:0 chroma planes of a {width}x{height} frame are {chroma[::-1]}, got {u.shape} {v.shape}")
    return height, width
