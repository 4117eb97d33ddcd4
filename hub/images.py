"""Image headers read without decoding: format, size and channels of every format the hub accepts (PNG, JPEG).

Every image (a device's sample, a gold upload) is measured here and held to the pixel cap *before* any decoder
runs: a decompression bomb (a 1 MB PNG or JPEG declaring 30000x30000 pixels) is refused without allocating a
single row. Our own parsers rather than a library's lazy open: nothing global to configure, and the same bytes
the decoder will trust (PNG's IHDR, JPEG's first SOF frame header) are the ones checked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hgen.hub.errors import ImageDecodeError, NotAnImageError
from hgen.protos import hub_pb2

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8"
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # IHDR colour type -> channels once decoded
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (C4 DHT, C8 JPG, CC DAC are not)
JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # markers without a length
RAW_CHANNELS = (0, 1, 3, 4)  # what the annotator page can show (grey, RGB, RGBA); 0 means 1
MAX_SIDE = 1 << 20


@dataclass(frozen=True)
class ImageHeader:
    format: int  # hgen.v1.ImageFormat
    width: int
    height: int
    channels: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff(data: bytes) -> int | None:
    """The format by content (never by a name or a declared field), None when it is neither PNG nor JPEG."""
    if data.startswith(PNG_SIGNATURE):
        return hub_pb2.IMAGE_FORMAT_PNG
    if data.startswith(JPEG_START + b"\xff"):
        return hub_pb2.IMAGE_FORMAT_JPEG
    return None


def encoded_image(data: bytes) -> hub_pb2.Image:
    """An uploaded file as a sample image: PNG or JPEG by content (never by file name), measured from its header
    only. The pixel cap and the decode check follow where it is stored (hgen.hub.validation.check_image, e.g. in
    GoldBook.add), so a bomb is never decoded."""
    fmt = sniff(data)
    if fmt is None:
        raise NotAnImageError("not an image: a PNG or JPEG file is needed")
    header = read_header(data, fmt)
    return hub_pb2.Image(format=fmt, data=data, height=header.height, width=header.width, channels=header.channels)


def read_header(data: bytes, fmt: int) -> ImageHeader:
    """The header of `data` in format `fmt`; ImageDecodeError when it is missing, truncated or implausible."""
    if fmt == hub_pb2.IMAGE_FORMAT_PNG:
        header = _png(data)
    elif fmt == hub_pb2.IMAGE_FORMAT_JPEG:
        header = _jpeg(data)
    else:
        raise ImageDecodeError(f"unsupported image format {fmt}")
    if not (0 < header.width <= MAX_SIDE and 0 < header.height <= MAX_SIDE):
        raise ImageDecodeError(f"image header declares {header.width}x{header.height} pixels")
    return header


def _png(data: bytes) -> ImageHeader:
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ImageDecodeError("image bytes are not a PNG (no IHDR header)")
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in PNG_CHANNELS:
        raise ImageDecodeError(f"PNG colour type {colour} is not valid")
    return ImageHeader(hub_pb2.IMAGE_FORMAT_PNG, width, height, PNG_CHANNELS[colour])


def _jpeg(data: bytes) -> ImageHeader:
    """Walk the marker segments up to the first frame header (SOFn); the scan data is never read."""
    if not data.startswith(JPEG_START):
        raise ImageDecodeError("image bytes are not a JPEG")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ImageDecodeError(f"JPEG marker expected at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in JPEG_STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):
            break  # end of image or start of scan before any frame header
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if marker in JPEG_SOF:
            if length < 8 or at + 10 > len(data):
                raise ImageDecodeError("JPEG frame header is truncated")
            height, width, components = struct.unpack(">HHB", data[at + 5:at + 10])
            return ImageHeader(hub_pb2.IMAGE_FORMAT_JPEG, width, height, components)
        if length < 2:
            raise ImageDecodeError(f"JPEG segment at byte {at} has length {length}")
        at += 2 + length
    raise ImageDecodeError("JPEG has no frame header (SOF) before its image data")
