"""Checks a sample must pass before the hub accepts it; each failure is a typed BadInputError.

Pixel caps are checked on the declared shape and on the PNG header before decoding, so a decompression
bomb is refused without allocating it.
"""

from __future__ import annotations

import struct
import uuid

import cv2
import numpy as np

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import ImageDecodeError, ImageTooLargeError, InvalidRequestError, MalformedMessageError, \
    MessageTooLargeError
from hgen.protos import hub_pb2

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def parse_request(payload: bytes, max_bytes: int) -> hub_pb2.AnnotationRequest:
    """Decode an AnnotationRequest payload (MQTT) with the size cap gRPC applies on its side."""
    if len(payload) > max_bytes:
        raise MessageTooLargeError(f"payload of {len(payload)} bytes exceeds the cap of {max_bytes}")
    try:
        return hub_pb2.AnnotationRequest.FromString(payload)
    except Exception as exc:  # protobuf raises DecodeError, or RuntimeWarning-derived errors on bad UTF-8
        raise MalformedMessageError(f"payload is not an hgen.v1.AnnotationRequest: {exc}") from None


def check_uuid(value: str, what: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError(f"{what} {value!r} is not a UUID") from None


def check_image(image: hub_pb2.Image, limits: LimitsConfig) -> None:
    """Refuse images over the pixel cap or that do not decode to their declared shape."""
    _check_pixels(image.height * image.width, limits, "declared")
    if image.format == hub_pb2.IMAGE_FORMAT_RAW_U8:
        _check_raw(image)
        return
    if image.format == hub_pb2.IMAGE_FORMAT_PNG:
        _check_pixels(_png_pixels(image.data), limits, "PNG header")
    elif image.format != hub_pb2.IMAGE_FORMAT_JPEG:
        raise ImageDecodeError(f"unsupported image format {image.format}")
    decoded = cv2.imdecode(np.frombuffer(image.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageDecodeError(f"image bytes do not decode as {hub_pb2.ImageFormat.Name(image.format)}")
    _check_pixels(decoded.shape[0] * decoded.shape[1], limits, "decoded")
    if (image.height, image.width) != (0, 0) and decoded.shape[:2] != (image.height, image.width):
        raise ImageDecodeError(f"image decodes to {decoded.shape[1]}x{decoded.shape[0]}, "
                               f"declared {image.width}x{image.height}")


def _check_pixels(pixels: int, limits: LimitsConfig, where: str) -> None:
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(f"image has {pixels} pixels ({where}), over the cap of {limits.max_pixels}")


def _png_pixels(data: bytes) -> int:
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE):
        raise ImageDecodeError("image bytes are not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width * height


def _check_raw(image: hub_pb2.Image) -> None:
    expected = image.height * image.width * max(image.channels, 1)
    if expected == 0 or len(image.data) != expected:
        raise ImageDecodeError(f"raw image has {len(image.data)} bytes, shape "
                               f"{image.height}x{image.width}x{image.channels} needs {expected}")
