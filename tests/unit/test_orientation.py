"""Files as people see them: the device and hub turn EXIF-tagged photos upright exactly as the compiler's loader
(Pillow's exif_transpose) does, and reduce 16-bit files to the same 8 bits."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from hgen.compiler.data.images import decode_image
from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.sources.images import ImageFolderSource
from hgen.runtime.orientation import decode_upright, exif_orientation, upright
from hgen.runtime.preprocess import FrameShapeError, eight_bits, frame_channels


def asymmetric(height: int = 6, width: int = 10) -> np.ndarray:
    """RGB pixels no rotation or flip maps onto themselves."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(rgb: np.ndarray, orientation: int, kind: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, kind, exif=exif.tobytes(), **({"quality": 95} if kind == "JPEG" else {}))
    return buffer.getvalue()


def pillow_upright(data: bytes) -> np.ndarray:
    """What the compiler's loader and every viewer show, in OpenCV's BGR order."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))[..., ::-1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_turns_upright_as_pillow_does(orientation: int) -> None:
    data = encoded(asymmetric(), orientation, "PNG")  # lossless: the pixels must be identical
    assert exif_orientation(data) == orientation
    np.testing.assert_array_equal(decode_upright(data), pillow_upright(data))


@pytest.mark.parametrize("orientation", (3, 6, 8))
def test_a_tagged_webp_turns_upright_as_pillow_does(orientation: int) -> None:
    data = encoded(asymmetric(), orientation, "WEBP")
    assert exif_orientation(data) == orientation
    assert decode_upright(data).shape == pillow_upright(data).shape


def test_a_sideways_phone_jpeg_is_read_upright_by_the_device_as_by_the_compiler(tmp_path: Path) -> None:
    """Orientation 6, a phone held upright: stored 10 wide, shown 6 wide. The device's images source and the
    compiler's loader give the same upright frame (JPEG decoders may differ by a grey level)."""
    (tmp_path / "photo.jpg").write_bytes(encoded(asymmetric(), 6, "JPEG"))
    source = ImageFolderSource(SourceConfig(kind="images", uri=str(tmp_path)), threading.Event())
    frame = source.read()
    assert frame is not None and frame.image is not None and frame.image.shape == (10, 6, 3)
    device = frame_channels(frame.image, 3).astype(int)
    compiler = decode_image(tmp_path / "photo.jpg", 3).astype(int)
    assert device.shape == compiler.shape and np.abs(device - compiler).mean() < 2


def test_an_empty_or_undecodable_file_is_a_frame_without_an_image(tmp_path: Path) -> None:
    """Reported by the agent as unreadable; the stream goes on (an empty file made OpenCV raise)."""
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    source = ImageFolderSource(SourceConfig(kind="images", uri=str(tmp_path)), threading.Event())
    frames = [source.read(), source.read()]
    assert [f.image for f in frames if f is not None] == [None, None] and source.read() is None

def test_no_tag_a_broken_tag_or_no_image_reads_as_stored() -> None:
    plain = io.BytesIO()
    Image.fromarray(asymmetric()).save(plain, "JPEG")
    assert exif_orientation(plain.getvalue()) == 1
    broken = encoded(asymmetric(), 6, "JPEG").replace(b"Exif\x00\x00", b"Exif\x00\x00\xff\xff\xff\xff", 1)
    assert exif_orientation(broken) == 1
    assert exif_orientation(b"") == exif_orientation(b"\xff\xd8\xff") == exif_orientation(b"not an image") == 1
    assert decode_upright(b"not an image") is None and decode_upright(b"") is None  # OpenCV raises on b""
    image = asymmetric()
    assert upright(image, 1) is image and upright(image, 9) is image


def test_16_bit_files_become_the_same_8_bits_on_the_device_and_in_the_compiler(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey16 = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    colour16 = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    for name, pixels, channels in (("grey.png", grey16, 1), ("colour.png", colour16, 3)):
        assert cv2.imwrite(str(tmp_path / name), pixels)
        device = frame_channels(decode_upright((tmp_path / name).read_bytes()), channels)
        np.testing.assert_array_equal(device, decode_image(tmp_path / name, channels))
    np.testing.assert_array_equal(eight_bits(grey16), (grey16 >> 8).astype(np.uint8))
    with pytest.raises(FrameShapeError, match="float32 is not uint8 or uint16"):
        frame_channels(np.zeros((2, 2, 3), np.float32), 3)
