"""How big a sample is shown to people: camera frames come at any size, screens do not.

Small images (a 28x28 digit, a 96x96 crop) are enlarged by a whole factor and drawn with hard pixel edges, so
people see the pixels the model saw instead of a blur; large ones (a 4K frame) are fitted into the box, smoothly.
The aspect ratio is kept in both cases, so drawn boxes and regions map back to image coordinates exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

BOX = 640  # the longest displayed side, in CSS pixels
FALLBACK = 448  # an image whose size the device did not report


@dataclass(frozen=True)
class Display:
    width: int
    height: int
    crisp: bool  # enlarged by a whole factor: draw with hard pixel edges


def display_size(width: int, height: int, box: int = BOX) -> Display:
    if width <= 0 or height <= 0:
        return Display(FALLBACK, FALLBACK, False)
    longest = max(width, height)
    if longest <= box:
        factor = max(1, box // longest)
        return Display(width * factor, height * factor, factor > 1)
    scale = box / longest
    return Display(max(1, round(width * scale)), max(1, round(height * scale)), False)
