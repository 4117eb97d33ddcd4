"""A user's own data: the folder format, decoding limits, the unreadable-file policy, the cache, challenge variants,
the MNIST family as an idx folder.

Every test generates its data in tmp_path (colour images of mixed sizes, JPEG and PNG, a few corrupt files).
"""

from __future__ import annotations

import resource
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.data import load_dataset
from hgen.compiler.data.formats import detect_format, format_names, parse_location
from hgen.compiler.data.images import ImageOptions, Preprocess, load_image, read_header, transform_boxes
from hgen.compiler.errors import (DatasetFormatError, DatasetSpecError, EmptyDatasetError, ImageTooLargeError,
                                  UnknownNameError, UnreadableImageError)

CLASSES = ("cat", "dog", "owl")
COLOURS = {"cat": (220, 60, 40), "dog": (40, 200, 60), "owl": (50, 70, 230)}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))


def picture(rng: np.random.Generator, colour: tuple[int, int, int], size: tuple[int, int]) -> np.ndarray:
    w, h = size
    base = np.array(colour, np.float32)[None, None, :] * np.ones((h, w, 1), np.float32)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode == "RGBA":
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("P")
    elif mode == "L":
        image = image.convert("L")
    image.save(path)
    return path


def make_folder(root: Path, per_class: int = 10, corrupt: bool = True, seed: int = 0) -> Path:
    """ROOT/<class>/ with mixed sizes, JPEG and PNG, RGB / RGBA / palette / grey, plus two corrupt files."""
    rng = np.random.default_rng(seed)
    modes = ("RGB", "RGBA", "P", "L")
    for name in CLASSES:
        for i in range(per_class):
            size = (int(rng.integers(24, 160)), int(rng.integers(24, 160)))
            ext = "jpg" if i % 2 else "png"
            mode = modes[i % 4] if ext == "png" else "RGB"
            save(picture(rng, COLOURS[name], size), root / name / f"{name}_{i:02d}.{ext}", mode)
    if corrupt:
        (root / "dog" / "garbage.jpg").write_bytes(b"this is not a JPEG at all")
        good = (root / "owl" / "owl_01.jpg").read_bytes()
        (root / "owl" / "truncated.jpg").write_bytes(good[: len(good) // 3])  # header fine, data cut
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored
    return root


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit 20000 x 20000 PNG of ~20 kB: decoding it would need hundreds of MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes((side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


class DecodeCounter:
    def __init__(self, monkeypatch):
        from hgen.compiler.data import images

        self.calls = 0
        original = images.decode_image
        lock = threading.Lock()

        def counting(*args, **kwargs):
            with lock:  # decoding runs in threads
                self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(images, "decode_image", counting)


# ---- folder ------------------------------------------------------------------------------------------------------

def test_folder_loads_colour_images_of_any_size_with_a_stratified_split(tmp_path):
    root = make_folder(tmp_path / "cams")
    data = load_dataset(str(root))
    assert detect_format(root).name == "folder"
    assert data.labels == CLASSES
    assert data.input_shape == (96, 96, 3)  # colour default
    train_x = np.asarray(data.train.x)  # uint8 until read (hgen.compiler.data.lazy): float32 when materialised
    assert train_x.dtype == np.float32 and 0.0 <= train_x.min() and train_x.max() <= 1.0
    # 32 files (10 per class + 2 corrupt) split per class 70/15/15 by seed, then the 2 unreadable ones skipped
    assert (len(data.train), len(data.val), len(data.test)) == (19, 5, 6)
    for split in (data.train, data.val, data.test):
        assert set(split.y.tolist()) == {0, 1, 2}  # every class in every split
    # the image's colour survives: the mean channel order matches the class colour
    mean = train_x[data.train.y == 2].mean(axis=(0, 1, 2))
    assert mean.argmax() == 2
    report = data.report
    assert len(report.unreadable) == 2
    assert any("garbage.jpg" in line for line in report.unreadable)
    assert any("truncated.jpg" in line for line in report.unreadable)
    assert any(p.endswith("notes.txt") for p in report.ignored)
    assert data.preprocess.shape == (96, 96, 3) and data.preprocess.resize == "stretch"
    again = load_dataset(str(root))
    np.testing.assert_array_equal(again.test.x, data.test.x)
    other = load_dataset(str(root), seed=1)
    assert not np.array_equal(other.test.y, data.test.y) or not np.array_equal(other.test.x, data.test.x)


def test_split_folders_classes_txt_size_channels_and_spec_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "split"
    for split, n in (("train", 6), ("test", 2)):
        for name in ("b", "a"):
            for i in range(n):
                save(picture(rng, (90, 90, 90), (40 + i, 30)), root / split / name / f"{i}.png", "L")
    (root / "classes.txt").write_text("b\na\n")
    data = load_dataset(f"folder:{root}:lowres?factor=2&size=32", seed=0)
    assert data.labels == ("b", "a")  # classes.txt order
    assert data.input_shape == (32, 32, 1)  # all grey -> one channel
    assert (len(data.train), len(data.val), len(data.test)) == (10, 2, 4)  # val carved from train
    assert data.report.carved == ("val",)
    assert data.name == f"folder:{root.resolve()}:lowres?factor=2&size=32x32"
    again = load_dataset(data.name)
    np.testing.assert_array_equal(again.train.x, data.train.x)
    rgb = load_dataset(str(root), image={"channels": 3, "size": (24, 40)})
    assert rgb.input_shape == (24, 40, 3)


@pytest.mark.parametrize("layout, error, names", [
    ("empty", EmptyDatasetError, "no images"),
    ("empty-class", EmptyDatasetError, "class 'dog'"),
    ("unlisted", DatasetFormatError, "owl"),
    ("listed-missing", EmptyDatasetError, "class 'emu'"),
    ("loose", DatasetFormatError, "sub-folder"),
    ("loose-beside-splits", DatasetFormatError, r"bad: 1 image\(s\) lie directly .*stray.png.*split folder"),
])
def test_folder_layout_errors_name_the_folder_or_class(tmp_path, layout, error, names):
    root = tmp_path / "bad"
    root.mkdir()
    rng = np.random.default_rng(0)
    if layout != "empty":
        for name in ("cat", "owl"):  # beside split folders: train/<class>, an image in ROOT was ignored unsaid
            folder = root / "train" / name if layout == "loose-beside-splits" else root / name
            save(picture(rng, COLOURS[name], (30, 30)), folder / "1.png")
    if layout == "empty-class":
        (root / "dog").mkdir()
    if layout == "unlisted":
        (root / "classes.txt").write_text("cat\n")
    if layout == "listed-missing":
        (root / "classes.txt").write_text("cat\nowl\nemu\n")
    if layout in ("loose", "loose-beside-splits"):
        save(picture(rng, (1, 2, 3), (30, 30)), root / "stray.png")
    with pytest.raises(error, match=names):
        load_dataset(str(root))


def test_unreadable_policy_skip_error_and_fraction(tmp_path):
    root = make_folder(tmp_path / "cams", per_class=4)
    with pytest.raises(UnreadableImageError, match="garbage.jpg"):
        load_dataset(str(root), image={"on_unreadable": "error"})
    # 2 of 14 files unreadable: over a 10% cap
    with pytest.raises(UnreadableImageError, match="2 of 14"):
        load_dataset(str(root), image={"max_unreadable_fraction": 0.1})
    data = load_dataset(str(root), image={"max_unreadable_fraction": 0.2})
    assert len(data.report.unreadable) == 2
    # nothing half-written: the failed loads left no set and no temporary file in the cache
    sets = sorted((tmp_path / "cache" / "images" / "sets").glob("*"))
    assert len([p for p in sets if p.suffix == ".npy"]) == 1 and not any(p.name.endswith(".tmp") for p in sets)


def test_a_class_whose_images_are_all_unreadable_is_an_error(tmp_path):
    root = make_folder(tmp_path / "cams", per_class=3, corrupt=False)
    for path in (root / "dog").iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(EmptyDatasetError, match="'dog'"):
        load_dataset(str(root), image={"max_unreadable_fraction": 1.0})


def test_decoding_happens_once_then_the_cache_is_memory_mapped(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "cams", per_class=6)
    counter = DecodeCounter(monkeypatch)
    first = load_dataset(str(root), image={"size": 48})
    # 18 good files + 2 corrupt: the garbage one fails at the header (never decoded), the truncated one decoding
    assert counter.calls == 19 and first.report.decoded == 18 and first.report.cached == 0
    counter.calls = 0
    second = load_dataset(str(root), image={"size": 48})
    assert counter.calls == 0 and second.report.set_cached and second.report.decoded == 0
    assert len(second.report.unreadable) == 2  # still reported from the cache
    np.testing.assert_array_equal(first.train.x, second.train.x)
    # another split (seed) reassembles the set from the per-image entries: still no decoding
    third = load_dataset(str(root), image={"size": 48}, seed=5)
    assert counter.calls == 1 and third.report.decoded == 0  # only the truncated file is retried
    # a changed file is decoded again (content-addressed), the others are not
    save(picture(np.random.default_rng(9), (0, 0, 0), (50, 50)), root / "cat" / "cat_00.png")
    counter.calls = 0
    fourth = load_dataset(str(root), image={"size": 48})
    assert fourth.report.decoded == 1 and counter.calls == 2
    # another size is another key
    assert load_dataset(str(root), image={"size": 32}).report.decoded == 18
    sets = list((tmp_path / "cache" / "images" / "sets").glob("*.npy"))
    assert np.load(sets[0], mmap_mode="r").dtype == np.uint8


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import ImageFile

    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    with monkeypatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert read_header(bomb, max_pixels=10**9).width == 20000  # a real 20000 x 20000 PNG

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        read_header(bomb)
    root = make_folder(tmp_path / "cams", per_class=2, corrupt=False)
    (root / "owl" / "bomb.png").write_bytes(bomb.read_bytes())
    with pytest.raises(ImageTooLargeError, match=r"owl/bomb\.png.*400000000 pixels.*refused before decoding"):
        load_dataset(str(root))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB: nothing decoded
    monkeypatch.undo()
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))
    data = load_dataset(str(root), image={"on_oversized": "skip"})
    assert len(data.report.oversized) == 1 and len(data.train) + len(data.val) + len(data.test) == 6


def test_letterbox_keeps_the_aspect_ratio_and_moves_boxes(tmp_path):
    wide = np.full((50, 100, 3), 200, np.uint8)
    save(wide, tmp_path / "wide.png")
    pre = Preprocess(height=64, width=64, channels=3, resize="letterbox")
    x = load_image(tmp_path / "wide.png", pre)
    assert x.shape == (64, 64, 3)
    assert x[:16].max() == 0 and x[48:].max() == 0 and x[16:48].min() > 0.7  # padded top and bottom
    boxes = transform_boxes(np.array([[0.0, 0.0, 1.0, 1.0, 0]]), 100, 50, pre)
    np.testing.assert_allclose(boxes[0, :4], [0.0, 0.25, 1.0, 0.75])
    stretched = load_image(tmp_path / "wide.png", pre.model_copy(update={"resize": "stretch"}))
    assert stretched.min() > 0.7


def test_options_are_strict_and_typed(tmp_path):
    root = make_folder(tmp_path / "cams", per_class=2, corrupt=False)
    with pytest.raises(DatasetSpecError, match="colour"):
        load_dataset(str(root), image={"colour": True})
    with pytest.raises(DatasetSpecError, match="resize"):
        load_dataset(f"{root}?resize=crop")
    with pytest.raises(DatasetSpecError, match="shares"):
        load_dataset(str(root), format_options={"shares": (0.5, 0.1, 0.1)})
    with pytest.raises(UnknownNameError, match="valid choices"):
        load_dataset(f"{root}:blurry")
    with pytest.raises(UnknownNameError, match="folder"):
        load_dataset(str(root), format="tiff")
    assert ImageOptions(size=64).size == (64, 64)
    assert set(format_names()) >= {"folder", "csv", "yolo", "coco", "idx"}
    assert parse_location("folder:/a/b:lowres?factor=2").format == "folder"
    assert parse_location("mnist") is None or Path("mnist").exists()


# ---- challenge variants on colour data ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["noise", "lowres", "lowlight", "blur"])
def test_challenge_variants_apply_to_colour_images_of_any_size(tmp_path, variant):
    root = make_folder(tmp_path / "cams", per_class=3, corrupt=False)
    clean = load_dataset(f"{root}?size=40x56")
    hard = load_dataset(f"{root}:{variant}?size=40x56")
    same = load_dataset(f"{root}:{variant}?size=40x56")
    hard_x, clean_x = np.asarray(hard.train.x), np.asarray(clean.train.x)
    assert hard.input_shape == (40, 56, 3) and hard_x.dtype == np.float32
    np.testing.assert_array_equal(hard_x, same.train.x)
    assert not np.allclose(hard_x, clean_x)
    assert 0.0 <= hard_x.min() and hard_x.max() <= 1.0
    if variant == "lowlight":
        assert hard_x.mean() < clean_x.mean() - 0.1
    # the variant is seeded per image: a row reads the same alone, in any batch, and through a view
    rows = np.array([len(hard_x) - 1, 0, 2])
    np.testing.assert_array_equal(np.asarray(hard.train.x[rows]), hard_x[rows])
    np.testing.assert_array_equal(hard.train.x[1], hard_x[1])


# ---- the MNIST family behind the same interface, and decoding details ---------------------------------------------

def test_an_idx_folder_is_a_format_too(tmp_path):
    import gzip

    folder = tmp_path / "digits-idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, array in (("t10k-images-idx3-ubyte", rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)),
                        ("t10k-labels-idx1-ubyte", (np.arange(100) % 10).astype(np.uint8))):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
        with gzip.open(folder / f"{stem}.gz", "wb") as handle:
            handle.write(header + array.tobytes())
    assert detect_format(folder).name == "idx"
    data = load_dataset(str(folder))
    assert data.input_shape == (28, 28, 1) and (len(data.train), len(data.val), len(data.test)) == (60, 10, 30)
    assert data.labels == tuple(str(d) for d in range(10))
    bigger = load_dataset(f"{folder}:lowres?size=32&channels=3")
    assert bigger.input_shape == (32, 32, 3)
    builtin = load_dataset("digits", limit=10)
    assert builtin.preprocess.shape == (28, 28, 1) and builtin.report is None


def test_exif_orientation_and_alpha_are_applied(tmp_path):
    from hgen.compiler.data.images import decode_image

    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    assert read_header(tmp_path / "rotated.jpg").upright() == (20, 40)
    upright = decode_image(tmp_path / "rotated.jpg", 3)
    assert upright.shape == (40, 20, 3) and upright[:15].mean() > 200 and upright[25:].mean() < 50
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, :4, 3] = 255  # left opaque white, right transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    flat = decode_image(tmp_path / "alpha.png", 3)
    assert flat[:, :4].min() == 255 and flat[:, 4:].max() == 0  # composited on black
    assert decode_image(tmp_path / "alpha.png", 1).shape == (8, 8, 1)
