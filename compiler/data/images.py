"""Image files -> model input: a header check against decompression bombs, decoding, colour handling and resizing.

The whole pipeline is recorded in a `Preprocess` so the device can reproduce it exactly:

1. `Image.open` reads the header only; an image with more than `max_pixels` pixels is refused with
   `ImageTooLargeError` before any pixel is decoded.
2. Decode; apply the EXIF orientation (camera JPEGs); 16-bit pixels keep their high byte; an alpha channel (RGBA, LA,
   palette with transparency) is composited onto black; then the image becomes RGB (3 channels) or L (1 channel,
   ITU-R 601-2 luma). PGM/PPM files are decoded by the device's own path (OpenCV, then
   `hgen.runtime.preprocess.frame_channels`): Pillow opens a 16-bit PGM as 32-bit integers and rescales PNM samples
   by the header's maxval, so a 12-bit PGM trained at 0..255 where the device, keeping the high byte, sees 0..15.
3. Resize to (height, width): `stretch` ignores the aspect ratio; `letterbox` scales to fit and pads with `pad_value`
   centred (left/top get the floor of half the padding). OpenCV `INTER_AREA` when shrinking, `INTER_LINEAR` when
   enlarging (per image, chosen on the scale factor of the larger axis).
4. Normalise: float32 = uint8 / 255 (the cache keeps uint8).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from hgen.compiler.errors import ImageTooLargeError, UnreadableImageError
from hgen.runtime.config import StrictModel
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.orientation import decode_upright
from hgen.runtime.preprocess import composite_on_black, eight_bits, fit, frame_channels, grey, normalise, placement

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# The edge agent's `images` source reads the same suffixes (any case), so what trains is what the device can replay.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; a 48 MP phone photo passes, a 20000 x 20000 bomb does not
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class Preprocess(StrictModel):
    """How an image file becomes the model's input tensor (recorded with the data set, for the device)."""

    height: int = Field(ge=1, le=4096, title="Input height in pixels")
    width: int = Field(ge=1, le=4096, title="Input width in pixels")
    channels: Literal[1, 3] = Field(title="1 = grey (L), 3 = RGB")
    resize: Literal["stretch", "letterbox"] = Field("stretch", title="stretch ignores the aspect ratio; letterbox "
                                                    "fits and pads")
    pad_value: int = Field(0, ge=0, le=255, title="Letterbox padding value (uint8)")
    interpolation: Literal["area-down-linear-up"] = Field("area-down-linear-up", title="OpenCV INTER_AREA when "
                                                          "shrinking, INTER_LINEAR when enlarging")
    colour_order: Literal["RGB", "L"] = Field("RGB", title="Channel order (L for one channel)")
    alpha: Literal["composite-black"] = Field("composite-black", title="How transparency is removed")
    exif_transpose: bool = Field(True, title="Apply the EXIF orientation tag before resizing")
    scale: float = Field(255.0, title="Normalisation: float32 input = uint8 / scale (so [0, 1])")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


class ImageOptions(StrictModel):
    """How a user's image files are read: input size, channels, resize mode, limits and the unreadable-file policy."""

    size: tuple[int, int] | None = Field(None, title="Model input (height, width); an int means square. Default: "
                                         "96x96 for image files, 28x28 for IDX (MNIST-family) data")
    channels: Literal[1, 3] | None = Field(None, title="1 (grey) or 3 (RGB); default: 3 when any image is colour")
    resize: Literal["stretch", "letterbox"] = Field("stretch", title="Resize mode")
    pad_value: int = Field(0, ge=0, le=255, title="Letterbox padding value")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, title="Largest image accepted (width x height), checked from "
                            "the header before decoding")
    on_oversized: Literal["error", "skip"] = Field("error", title="An image over max_pixels: stop with "
                                                   "ImageTooLargeError, or skip it and report it")
    on_unreadable: Literal["skip", "error"] = Field("skip", title="A corrupt or undecodable file, or an image whose "
                                                    "labels cannot be used (a bad YOLO label line, a bad COCO "
                                                    "annotation): skip it and report its name, or stop with "
                                                    "UnreadableImageError / LabelError")
    max_unreadable_fraction: float = Field(0.1, ge=0.0, le=1.0, title="Under 'skip', fail when more than this share "
                                           "of the files is unreadable, or of the images has unusable labels (counted apart; something systematic "
                                           "is wrong)")
    workers: int = Field(0, ge=0, le=64, title="Decoding threads (0: up to 4, by CPU count)")
    cache: bool = Field(True, title="Keep decoded, resized uint8 arrays in the cache")
    cache_dir: Path | None = Field(None, title="Cache folder (default $HGEN_CACHE/images or "
                                   "~/.cache/hgen/images)")
    cache_key: Literal["content", "stat"] = Field("content", title="Key files by a hash of their bytes, or by "
                                                  "(path, size, mtime)")

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if isinstance(value, str):
            parts = [p.strip() for p in value.lower().replace("x", ",").split(",")]
            if all(p.isdigit() for p in parts) and len(parts) in (1, 2):
                return tuple(int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
            raise ValueError(f"give one number for a square (size=64) or height x width (size=64x48), got {value!r}")
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_text(cls, value: object) -> object:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(1 <= v <= 4096 for v in value):
            raise ValueError("height and width must be in 1..4096")
        return value

    def preprocess(self, default_size: tuple[int, int], channels: int) -> Preprocess:
        height, width = self.size or default_size
        return Preprocess(height=height, width=width, channels=self.channels or channels,  # type: ignore[arg-type]
                          resize=self.resize, pad_value=self.pad_value,
                          colour_order="RGB" if (self.channels or channels) == 3 else "L")


@dataclass(frozen=True)
class Header:
    """What the header says, without decoding: size (width, height) and Pillow mode."""

    width: int
    height: int
    mode: str
    orientation: int = 1  # EXIF orientation tag; 5..8 swap width and height once applied

    @property
    def colour(self) -> bool:
        return self.mode not in GREY_MODES

    def upright(self, exif_transpose: bool = True) -> tuple[int, int]:
        """(width, height) after the EXIF orientation is applied (what the boxes of a detection set refer to)."""
        swap = exif_transpose and self.orientation in (5, 6, 7, 8)
        return (self.height, self.width) if swap else (self.width, self.height)


def _open(path: Path, max_pixels: int) -> PILImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        kind = "a broken symbolic link" if path.is_symlink() else "the file is gone"
        raise UnreadableImageError(f"{path}: not a readable image ({kind})") from None
    except Image.DecompressionBombError as exc:  # over Pillow's own limit (about 179 M pixels)
        raise ImageTooLargeError(f"{path}: {exc}; refused before decoding (max_pixels is {max_pixels:,})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(f"{path}: {width} x {height} = {width * height:,} pixels is over the limit of "
                                 f"{max_pixels:,} (max_pixels); refused before decoding")
    return image


def read_header(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Size and mode from the file header; raises ImageTooLargeError / UnreadableImageError, never decodes."""
    image = _open(Path(path), max_pixels)
    try:
        try:
            orientation = int(image.getexif().get(0x0112, 1))
        except Exception:  # noqa: BLE001 - a broken EXIF block is not a broken image
            orientation = 1
        return Header(image.size[0], image.size[1], image.mode, orientation)
    finally:
        image.close()


def decode_image(path: str | Path, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 exif_transpose: bool = True) -> np.ndarray:
    """Decode a file to uint8 [h, w, channels] at its own size (steps 1-2 of the module doc)."""
    from PIL import Image, ImageOps

    path = Path(path)
    image = _open(path, max_pixels)
    if image.format == "PPM":
        image.close()
        return _device_decode(path, channels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
            if exif_transpose:
                image = ImageOps.exif_transpose(image) or image
            return to_array(image, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from None
    finally:
        image.close()


def _device_decode(path: Path, channels: int) -> np.ndarray:
    """A file decoded as the device decodes it (OpenCV, high byte of 16 bits, BGR -> RGB): for PGM/PPM, whose
    samples Pillow rescales by the header's maxval where OpenCV keeps them."""
    try:
        frame = decode_upright(path.read_bytes())
        if frame is None:
            raise UnreadableImageError(f"{path}: cannot decode (OpenCV, which the device uses, does not read it)")
        return frame_channels(frame, channels)
    except OSError as exc:
        raise UnreadableImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except InvalidInputError as exc:
        raise UnreadableImageError(f"{path}: cannot decode ({exc})") from None


def to_array(image: PILImage, channels: int) -> np.ndarray:
    """A decoded Pillow image -> uint8 [h, w, channels]: 16-bit scaled, alpha composited on black, then RGB or L."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16"):  # the device's rule for 16-bit frames (`hgen.runtime.preprocess.eight_bits`)
        image = Image.fromarray(eight_bits(np.asarray(image).astype(np.uint16)), "L")
    elif mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = max(255.0, float(array.max(initial=0)))
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "PA") or mode not in ("L", "LA", "RGB", "RGBA", "P"):
        image = image.convert("RGBA" if mode == "PA" else "RGB")
    if image.mode in ("RGBA", "LA"):
        array = composite_on_black(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    else:
        array = np.asarray(image.convert("L" if image.mode == "L" else "RGB"), dtype=np.uint8)
    array = array[..., None] if array.ndim == 2 else array
    # the same colour steps as the device's frames (`hgen.runtime.preprocess.frame_channels`)
    if channels == 1:
        return array if array.shape[2] == 1 else grey(array)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def prepare(array: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Resize a decoded uint8 [h, w, c] image into the input (step 3) with the runtime's `fit`, the code the device
    runs on its frames; returns uint8 [H, W, C]."""
    return fit(array, pre.height, pre.width, pre.resize, pre.pad_value)


def transform_boxes(boxes: np.ndarray, width: int, height: int, pre: Preprocess) -> np.ndarray:
    """Boxes [k, 5] (x0, y0, x1, y1 normalised to the original image, class) -> normalised to the input."""
    if len(boxes) == 0 or pre.resize == "stretch":
        return np.asarray(boxes, np.float64).reshape(-1, 5)
    box = placement(width, height, pre.width, pre.height, pre.resize)
    out = np.asarray(boxes, np.float64).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] * box.width + box.left) / pre.width
    out[:, [1, 3]] = (out[:, [1, 3]] * box.height + box.top) / pre.height
    return out


def load_image(path: str | Path, pre: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One file through the whole recorded pipeline: float32 [H, W, C] in [0, 1] (what the model sees)."""
    uint8 = prepare(decode_image(path, pre.channels, max_pixels, pre.exif_transpose), pre)
    return normalise(uint8, 1.0 / pre.scale)
