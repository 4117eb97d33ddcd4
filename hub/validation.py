"""Checks a sample must pass before the hub accepts it; each failure is a typed BadInputError.

Pixel caps are checked on the declared shape and on the image's own header (hgen.hub.images: PNG and JPEG)
before decoding, so a decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import uuid

import cv2
import numpy as np

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import ImageDecodeError, ImageTooLargeError, InvalidRequestError, MalformedMessageError, \
    MessageTooLargeError
from hgen.hub.images import RAW_CHANNELS, read_header
from hgen.protos import hub_pb2


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
    """Refuse images over the pixel cap, with a shape the UI cannot show, or that do not decode as declared.

    The pixel cap is checked on the declared shape and then on the format's own header, both before decoding:
    a decompression bomb is refused without allocating it, whatever the format.
    """
    _check_pixels(image.height * image.width, limits, "declared")
    if image.format == hub_pb2.IMAGE_FORMAT_RAW_U8:
        _check_raw(image)
        return
    header = read_header(image.data, image.format)
    _check_pixels(header.pixels, limits, f"{hub_pb2.ImageFormat.Name(image.format)} header")
    if (image.height, image.width) != (0, 0) and (header.height, header.width) != (image.height, image.width):
        raise ImageDecodeError(f"image header says {header.width}x{header.height}, "
                               f"declared {image.width}x{image.height}")
    decoded = cv2.imdecode(np.frombuffer(image.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageDecodeError(f"image bytes do not decode as {hub_pb2.ImageFormat.Name(image.format)}")
    if decoded.shape[:2] != (header.height, header.width):
        raise ImageDecodeError(f"image decodes to {decoded.shape[1]}x{decoded.shape[0]}, "
                               f"its header says {header.width}x{header.height}")


def _check_pixels(pixels: int, limits: LimitsConfig, where: str) -> None:
    if pixels > limits.max_pixels:
        raise ImageTooLargeError(f"image has {pixels} pixels ({where}), over the cap of {limits.max_pixels}")


def _check_raw(image: hub_pb2.Image) -> None:
    if image.channels not in RAW_CHANNELS:
        raise ImageDecodeError(f"raw image has {image.channels} channels; the annotator page shows 1, 3 or 4")
    expected = image.height * image.width * max(image.channels, 1)
    if expected == 0 or len(image.data) != expected:
        raise ImageDecodeError(f"raw image has {len(image.data)} bytes, shape "
                               f"{image.height}x{image.width}x{image.channels} needs {expected}")


def device_clock_offset(request: hub_pb2.AnnotationRequest, now: float) -> float:
    """Seconds the device's clock is behind the hub's (negative: ahead), from when it says it sent the request;
    0 for a device that does not say (older agents). Includes the transit time, a second or less."""
    if not request.HasField("sent_at"):
        return 0.0
    return now - request.sent_at.ToNanoseconds() / 1e9


def request_deadline(request: hub_pb2.AnnotationRequest, now: float, limits: LimitsConfig,
                     clock_offset: float = 0.0) -> float:
    """The request's deadline on the hub's clock: the device's deadline moved by `clock_offset` (its clock's
    offset, `DeviceClocks.observe`), so a device whose clock is behind (a Pi without a real-time clock before NTP)
    still gets its patience, and one ahead does not hold people past it; none (or zero) gets the default; at most
    `max_deadline_s` from now."""
    device_deadline = request.deadline.ToNanoseconds() / 1e9 if request.HasField("deadline") else 0.0
    if not device_deadline:
        return now + limits.default_deadline_s
    return min(device_deadline + clock_offset, now + limits.max_deadline_s)
