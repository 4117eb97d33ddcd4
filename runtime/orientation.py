"""Image files as people see them: the EXIF orientation tag applied, one rule for device, hub and compiler.

Phones store a photo taken sideways as unrotated pixels plus an orientation tag; viewers, browsers and the
compiler's loader (Pillow's `exif_transpose`) show it upright. OpenCV ignores the tag when it keeps alpha and depth
(`IMREAD_UNCHANGED`), so frames read from files on the device, and images stored at the hub, are turned upright
here with the tag read from the file's own bytes: a model trained on upright photos sees upright photos.
Pure Python and numpy; `decode_upright` imports OpenCV lazily.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

ORIENTATION_TAG = 0x0112
_TIFF_HEADERS = {b"II*\x00": "<", b"MM\x00*": ">"}
_TURNS: dict[int, Callable[[np.ndarray], np.ndarray]] = {  # EXIF orientation -> the view that shows it upright
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1],
}


def exif_orientation(data: bytes) -> int:
    """The orientation tag (1..8) of a JPEG's APP1 Exif segment, a PNG's eXIf chunk or a WebP's EXIF chunk (where
    Pillow reads it too); 1 when there is none or it is broken (a broken tag is not a broken image)."""
    try:
        exif = _jpeg_exif(data) if data[:2] == b"\xff\xd8" else _png_exif(data) or _webp_exif(data)
        value = _orientation_in(exif) if exif else 1
    except (struct.error, IndexError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels [h, w, ...] stored under EXIF `orientation` -> as shown (Pillow's exif_transpose, same results)."""
    step = _TURNS.get(orientation)
    return image if step is None else np.ascontiguousarray(step(image))


def decode_upright(data: bytes) -> np.ndarray | None:
    """Encoded bytes -> OpenCV's pixels (grey, BGR or BGRA; 8 or 16 bits, as stored) turned upright; None when
    OpenCV cannot decode them."""
    import cv2

    if not data:  # OpenCV raises on an empty buffer rather than returning None
        return None
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # some codecs raise on malformed input instead of returning None
        return None
    return None if decoded is None else upright(decoded, exif_orientation(data))


def _jpeg_exif(data: bytes) -> bytes:
    """The TIFF block of the first APP1 "Exif" segment, scanning markers up to the image data."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata after these
            return b""
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        segment = data[at + 4:at + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            return segment[6:]
        at += 2 + length
    return b""


def _png_exif(data: bytes) -> bytes:
    """The eXIf chunk of a PNG (before its image data)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return b""
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"eXIf":
            return data[at + 8:at + 8 + length]
        if kind in (b"IDAT", b"IEND"):
            return b""
        at += 12 + length
    return b""


def _webp_exif(data: bytes) -> bytes:
    """The EXIF chunk of a WebP (RIFF) file; some writers start it with the JPEG's "Exif\\0\\0" header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return b""
    at = 12
    while at + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[at:at + 8])
        if kind == b"EXIF":
            chunk = data[at + 8:at + 8 + length]
            return chunk[6:] if chunk.startswith(b"Exif\x00\x00") else chunk
        at += 8 + length + (length & 1)  # chunks are padded to an even size
    return b""


def _orientation_in(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0 in a TIFF block."""
    order = _TIFF_HEADERS.get(tiff[:4])
    if order is None:
        return 1
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
    for index in range(count):
        entry = tiff[ifd + 2 + 12 * index:ifd + 14 + 12 * index]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == ORIENTATION_TAG and kind == 3:  # SHORT, stored in the first two bytes of the value field
            return int(struct.unpack(order + "H", entry[8:10])[0])
    return 1
