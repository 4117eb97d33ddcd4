"""The same image file through the compiler's data pipeline (Pillow decode -> runtime fit) and through the device
(the agent's image-folder source, OpenCV decode -> the agent's `preprocess` from the bundle's input spec) gives the
same model input: the device feeds the model what it was trained on."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.data.images import Preprocess, load_image, transform_boxes
from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.model import preprocess
from hgen.edge_agent.sources.images import ImageFolderSource
from hgen.runtime.bundle import InputSpec
from hgen.runtime.preprocess import FrameShapeError, frame_channels

ONE_STEP = 1.0 / 255.0 + 1e-6


def picture(mode: str, width: int = 53, height: int = 31, seed: int = 0) -> Image.Image:
    """A noisy gradient with structure at every scale, so resizing differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256, 128 + (x % 2) * 127], axis=-1)
    rgba = np.clip(rgba + rng.integers(-40, 40, rgba.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    return image.convert("RGB").quantize(64) if mode == "P" else image.convert(mode)


def device_frame(path):
    """What the agent reads from a folder holding this one file."""
    source = ImageFolderSource(SourceConfig(kind="images", uri=str(path.parent)), threading.Event())
    return source.read().image


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_png_gives_the_same_input_on_both_sides(tmp_path, mode, channels, resize):
    path = tmp_path / "one" / "frame.png"
    path.parent.mkdir()
    picture(mode).save(path)
    for height, width in ((24, 24), (64, 96)):  # shrinking and enlarging
        pre = Preprocess(height=height, width=width, channels=channels, resize=resize, pad_value=7,
                         colour_order="RGB" if channels == 3 else "L")
        spec = InputSpec(shape=(1, height, width, channels), scale=1 / 255, resize=resize, pad_value=7)
        compiled = load_image(path, pre)
        on_device, resized = preprocess(device_frame(path), spec)
        assert resized and compiled.shape == on_device.shape == (height, width, channels)
        np.testing.assert_array_equal(compiled, on_device)


def test_jpeg_differs_by_at_most_one_step(tmp_path):
    """Pillow and OpenCV each bundle a JPEG decoder; their IDCTs may round differently."""
    path = tmp_path / "one" / "frame.jpg"
    path.parent.mkdir()
    picture("RGB", 120, 90).save(path, quality=85)
    pre = Preprocess(height=48, width=48, channels=3, resize="letterbox")
    spec = InputSpec(shape=(1, 48, 48, 3), scale=1 / 255, resize="letterbox")
    difference = np.abs(load_image(path, pre) - preprocess(device_frame(path), spec)[0])
    assert difference.max() <= ONE_STEP


def test_letterbox_pads_and_keeps_the_aspect_ratio():
    frame = np.full((10, 40, 3), 200, np.uint8)  # wide BGR frame
    x, _ = preprocess(frame, InputSpec(shape=(1, 20, 20, 3), scale=1.0, resize="letterbox", pad_value=9))
    assert np.all(x[:7] == 9) and np.all(x[7:12] == 200) and np.all(x[12:] == 9)  # 20x5 band in the middle


def test_frames_that_cannot_become_an_input_are_refused():
    with pytest.raises(FrameShapeError, match="empty"):
        frame_channels(np.zeros((0, 4, 3), np.uint8), 3)
    with pytest.raises(FrameShapeError, match="is not uint8 or uint16"):
        frame_channels(np.zeros((4, 4), np.int32), 1)  # 16-bit frames are reduced (test_orientation.py)
    with pytest.raises(FrameShapeError, match="2 channels"):
        frame_channels(np.zeros((4, 4, 2), np.uint8), 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_hubs_retrain_sees_what_the_device_fed_its_model(channels):
    """A sample as the agent sends it (the frame PNG-encoded by OpenCV) and as the hub decodes it for retraining."""
    import cv2

    from hgen.hub.retrain.data import decode
    from hgen.protos import hub_pb2

    frame = cv2.cvtColor(np.asarray(picture("RGB")), cv2.COLOR_RGB2BGR)  # BGR, as OpenCV hands frames over
    ok, png = cv2.imencode(".png", frame)
    stored = SimpleNamespace(sample_id="s-1", image_format=hub_pb2.IMAGE_FORMAT_PNG, height=31, width=53,
                             channels=3, image=png.tobytes())
    spec = InputSpec(shape=(1, 40, 40, channels), scale=1 / 255, resize="letterbox", pad_value=7)
    on_device, _ = preprocess(frame, spec)
    np.testing.assert_array_equal(decode(stored, (40, 40, channels), "letterbox", 7), on_device)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("width,height", [(100, 50), (50, 100), (64, 48), (48, 48)])
def test_the_device_maps_boxes_into_the_input_as_the_compile_does(resize: str, width: int, height: int) -> None:
    """People's pixel boxes reach the device's fusion in the model's input corners, as the compile mapped the
    training labels (`transform_boxes`); and back to pixels for the results."""
    from hgen.edge_agent.kinds import FrameSize

    pre = Preprocess(height=48, width=48, channels=3, resize=resize)
    spec = InputSpec(shape=(1, 48, 48, 3), scale=1 / 255, resize=resize)
    normalised = np.array([[0.1, 0.2, 0.6, 0.9, 0], [0.0, 0.0, 1.0, 1.0, 1]])
    size = FrameSize.of(width, height, spec)
    pixels = normalised[:, :4] * [width, height, width, height]
    np.testing.assert_allclose(size.to_input(pixels), transform_boxes(normalised, width, height, pre)[:, :4],
                               atol=1e-9)
    np.testing.assert_allclose(size.to_pixels(size.to_input(pixels)), pixels, atol=1e-9)
