"""Issue 16, hostile bytes: every image is measured from its own header (PNG IHDR, JPEG SOF) and held to the
pixel cap before any decoder runs; raw images the annotator page cannot show are refused at ingest; an image
stored before these checks is refused with a 4xx, not a 500."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from hgen.hub.config import LimitsConfig
from hgen.hub.errors import ImageDecodeError, ImageTooLargeError
from hgen.hub.images import read_header, sniff
from hgen.hub.testing.bombs import jpeg_bomb
from hgen.hub.validation import check_image
from hgen.hub.web.routes_annotate import image_response
from hgen.protos import hub_pb2

LIMITS = LimitsConfig(max_pixels=4096 * 4096)
PNG, JPEG, RAW = hub_pb2.IMAGE_FORMAT_PNG, hub_pb2.IMAGE_FORMAT_JPEG, hub_pb2.IMAGE_FORMAT_RAW_U8


def encoded(ext: str, shape: tuple[int, ...], **params: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    flags = [v for pair in params.items() for v in (getattr(cv2, pair[0]), pair[1])]
    return cv2.imencode(ext, pixels, flags)[1].tobytes()


@pytest.mark.parametrize(("ext", "shape", "fmt", "channels"), [
    (".png", (20, 30), PNG, 1), (".png", (20, 30, 3), PNG, 3), (".png", (20, 30, 4), PNG, 4),
    (".jpg", (20, 30), JPEG, 1), (".jpg", (20, 30, 3), JPEG, 3)])
def test_headers_give_size_and_channels_without_decoding(ext: str, shape: tuple[int, ...], fmt: int,
                                                         channels: int) -> None:
    data = encoded(ext, shape)
    assert sniff(data) == fmt
    header = read_header(data, fmt)
    assert (header.width, header.height, header.channels) == (30, 20, channels)
    check_image(hub_pb2.Image(format=fmt, data=data, height=20, width=30, channels=channels), LIMITS)


def test_progressive_jpeg_header_is_read_too() -> None:
    data = encoded(".jpg", (40, 50, 3), IMWRITE_JPEG_PROGRESSIVE=1)
    assert (read_header(data, JPEG).width, read_header(data, JPEG).height) == (50, 40)


def test_a_jpeg_bomb_declaring_one_pixel_is_refused_from_its_frame_header() -> None:
    bomb = jpeg_bomb(30000)
    assert read_header(bomb, JPEG).pixels == 30000 * 30000
    with pytest.raises(ImageTooLargeError, match="JPEG header"):  # before issue 16: decoded (1.9 GB) first
        check_image(hub_pb2.Image(format=JPEG, data=bomb, height=1, width=1, channels=3), LIMITS)


def test_a_png_bomb_is_refused_from_ihdr_for_every_colour_type() -> None:
    for colour in (0, 2, 6):
        ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, colour, 0, 0, 0)
        data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4 + b"IDAT" * 4
        with pytest.raises(ImageTooLargeError, match="PNG header"):
            check_image(hub_pb2.Image(format=PNG, data=data), LIMITS)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8\xff\xc0\x00\x01",
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, b"GIF89a" + b"\x00" * 40])
def test_truncated_or_foreign_headers_are_refused(data: bytes) -> None:
    for fmt in (PNG, JPEG):
        with pytest.raises(ImageDecodeError):
            check_image(hub_pb2.Image(format=fmt, data=data), LIMITS)


def test_a_header_that_disagrees_with_the_declared_shape_is_refused() -> None:
    data = encoded(".png", (20, 30))
    with pytest.raises(ImageDecodeError, match="header says 30x20"):
        check_image(hub_pb2.Image(format=PNG, data=data, height=30, width=20, channels=1), LIMITS)


@pytest.mark.parametrize("channels", [2, 5, 7])
def test_raw_images_the_page_cannot_show_are_refused_at_ingest(channels: int) -> None:
    image = hub_pb2.Image(format=RAW, data=bytes(4 * 4 * channels), height=4, width=4, channels=channels)
    with pytest.raises(ImageDecodeError, match="channels"):
        check_image(image, LIMITS)
    with pytest.raises(ImageDecodeError):  # one stored before the check: a 4xx page, not a 500
        image_response(image)
    for ok in (1, 3, 4):
        check_image(hub_pb2.Image(format=RAW, data=bytes(4 * 4 * ok), height=4, width=4, channels=ok), LIMITS)


def test_ingest_refuses_a_two_channel_raw_image_that_the_page_could_not_show(tmp_path: Path) -> None:
    from hgen.hub.config import parse_hub_config
    from hgen.hub.service import HubService
    from hgen.hub.testing.samples import make_request, make_sample

    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'h.db'}"}})
    service = HubService.from_config(config)
    try:
        image = hub_pb2.Image(format=RAW, data=bytes(8 * 8 * 2), height=8, width=8, channels=2)
        result = service.submit(make_request("cam-1", [make_sample("cam-1", image=image)], m=1), "grpc")
        assert result.accepted == []  # before issue 16: accepted, then GET /task/<id>/image -> 500
        assert result.immediate[0].reject_reason == hub_pb2.REJECT_REASON_IMAGE_UNDECODABLE
    finally:
        service.close()
