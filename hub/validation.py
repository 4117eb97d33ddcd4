"""Checks a sample must pass before the hub accepts it; each failure is a typed BadInputError.

Pixel caps are checked on the declared shape and on the image's own header (hgen.hub.images: PNG and JPEG)
before decoding, so a decompression bomb is refused without allocating it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable

import cv2
import numpy as np

from hgen.hub.config import HubConfig, LimitsConfig
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


# google.protobuf.Timestamp's valid range (0001-01-01 .. 9999-12-31): outside it, ToNanoseconds raises ValueError
TIMESTAMP_MIN_S, TIMESTAMP_MAX_S = -62_135_596_800, 253_402_300_799
NANOS_PER_S = 1_000_000_000
MAX_ECHOED_CHARS = 128  # a client-supplied id is cut to this in refusals, log lines and once-log keys


def clip(value: str, limit: int = MAX_ECHOED_CHARS) -> str:
    """A client-supplied string as the hub repeats it: cut, so a huge id cannot grow logs, memory or a status text
    past gRPC's metadata limit (which would turn the refusal into RESOURCE_EXHAUSTED)."""
    return value if len(value) <= limit else f"{value[:limit]}...({len(value)} chars)"


def check_finite(value: float, what: str) -> None:
    """NaN and infinity pass protobuf but not the knowledge base (SQLite stores NaN as NULL) nor arithmetic."""
    if not math.isfinite(value):
        raise InvalidRequestError(f"{what} must be a finite number, got {value}")


def check_all_finite(values: Iterable[float], what: str) -> None:
    for index, value in enumerate(values):
        check_finite(value, f"{what}[{index}]")


def check_timestamp(message: object, name: str, what: str) -> None:
    """A set google.protobuf.Timestamp field must be in its valid range, or reading it raises ValueError later."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return
    stamp = getattr(message, name)
    if not (TIMESTAMP_MIN_S <= stamp.seconds <= TIMESTAMP_MAX_S and 0 <= stamp.nanos < NANOS_PER_S):
        raise InvalidRequestError(f"{what} is not a valid timestamp (seconds {stamp.seconds}, nanos {stamp.nanos}; "
                                  "years 1..9999)")


def check_request_numbers(request: hub_pb2.AnnotationRequest) -> None:
    """The request's own numbers and times: finite, in range."""
    check_finite(request.labour_budget, "labour_budget")
    if request.labour_budget < 0:
        raise InvalidRequestError(f"labour_budget must be >= 0 (0: the hub's default), got {request.labour_budget}")
    check_timestamp(request, "deadline", "deadline")
    check_timestamp(request, "sent_at", "sent_at")


def check_sample_numbers(sample: hub_pb2.Sample) -> None:
    """A sample's model output and capture time: every float finite, the timestamp in range."""
    output = sample.output
    check_finite(output.confidence, "output.confidence")
    check_all_finite(output.class_probabilities, "output.class_probabilities")
    for index, box in enumerate(output.boxes):
        check_all_finite((box.x_min, box.y_min, box.x_max, box.y_max, box.score), f"output.boxes[{index}]")
    check_timestamp(sample, "captured_at", "captured_at")


def check_uuid(value: str, what: str) -> None:
    """Only the canonical spelling (lowercase, hyphenated 8-4-4-4-12: what the agent's uuid4() and the phone's
    crypto.randomUUID() send). The knowledge base keys samples and batches by the string, so each other spelling of
    one UUID (upper case, braces, no hyphens, urn:uuid:) stored another sample, and the longest overflowed the
    36-character column."""
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequestError(f"{what} {clip(value)!r} is not a UUID") from None
    if value != canonical:
        raise InvalidRequestError(f"{what} {clip(value)!r} is not a UUID in canonical form (lowercase, hyphenated "
                                  f"8-4-4-4-12, e.g. {canonical})")


MAX_CLASS_PROBABILITIES = 1000  # a hub that does not know its classes caps the vector's length at this


def classes_known(config: HubConfig) -> bool:
    """Whether the hub knows the classes its devices' models answer in: `num_classes` set in the config, or read
    from a retrained model's bundle. Else it is a fallback (hgen.hub.config.DEFAULT_CLASSES) that a device's model
    need not share: its samples' class probabilities are then only capped in length, not refused for it (a
    5-class model's samples, accepted before, were all refused on a hub with no readable bundle)."""
    return config._classes_known  # noqa: SLF001 (the config's own record of where num_classes came from)


def check_model_output(output: hub_pb2.ModelOutput, num_classes: int, limits: LimitsConfig,
                       known: bool = True) -> None:
    """Shape before values: class probabilities are none (detection samples carry boxes instead) or one per class
    people answer in when the hub knows its classes (`known`, see `classes_known`), else at most
    MAX_CLASS_PROBABILITIES (a 2,000,000-long vector was stored, then the annotator page listed classes that do
    not exist); at most `limits.max_model_boxes` boxes. Checked before any value is read, so a huge output costs
    nothing more."""
    count = len(output.class_probabilities)
    if known:
        if count not in (0, num_classes):
            raise InvalidRequestError(f"output.class_probabilities has {count} values: people answer in "
                                      f"{num_classes} classes (num_classes), so send {num_classes} or none")
    elif count > MAX_CLASS_PROBABILITIES:
        raise InvalidRequestError(f"output.class_probabilities has {count} values, over the "
                                  f"{MAX_CLASS_PROBABILITIES} a hub takes without a known num_classes")
    if len(output.boxes) > limits.max_model_boxes:
        raise InvalidRequestError(f"output.boxes has {len(output.boxes)} boxes, over limits.max_model_boxes "
                                  f"({limits.max_model_boxes})")


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
