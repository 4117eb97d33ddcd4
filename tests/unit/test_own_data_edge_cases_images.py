"""The image files people actually have, generated here: phone JPEGs with an EXIF rotation, 16-bit, alpha, palette,
CMYK and grey files, BMP/TIFF/WebP/PGM, upper-case suffixes; class folders named with spaces, accents (as macOS
writes them, decomposed) or bytes that are not UTF-8; macOS debris, empty, truncated and fake images, broken links.
Good images load as a viewer shows them; bad ones are skipped and named; nothing ends in a raw traceback.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hgen.compiler.cli.main import main
from hgen.compiler.data import load_dataset
from hgen.compiler.data.images import decode_image
from hgen.compiler.errors import DatasetSpecError, EmptyDatasetError, UnreadableImageError

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))


def halves(height: int = 20, width: int = 40) -> np.ndarray:
    """Red left half, blue right half: any rotation or channel swap shows."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = RED
    image[:, width // 2:] = BLUE
    return image


def write(path: Path, array: np.ndarray, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def test_a_sideways_phone_photo_is_upright_as_a_viewer_shows_it(tmp_path: Path) -> None:
    """EXIF orientation 6 (the camera was turned clockwise) and 8: decoded upright, as OpenCV's IMREAD_COLOR and
    every viewer show it (IMREAD_UNCHANGED would not)."""
    for tag, top in ((6, RED), (8, BLUE)):
        image = Image.fromarray(halves())
        exif = image.getexif()
        exif[0x0112] = tag
        path = tmp_path / f"phone{tag}.JPG"
        image.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
        upright = decode_image(path, 3)
        assert upright.shape == (40, 20, 3)
        assert np.abs(upright[:15].mean(axis=(0, 1)) - top).max() < 8
        viewer = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]  # the orientation OpenCV applies
        assert np.abs(viewer.astype(int) - upright.astype(int)).max() < 8


def _sixteen_bit(path: Path, colour: bool) -> Path:
    ramp = (np.linspace(0, 65535, 40)[None, :] * np.ones((20, 1))).astype(np.uint16)
    cv2.imwrite(str(path), np.stack([ramp, ramp // 2, np.full_like(ramp, 65535)], -1) if colour else ramp)
    return path


@pytest.mark.parametrize("kind", ["png16-grey", "png16-colour", "tiff16-grey", "alpha", "palette", "palette-alpha",
                                  "la", "cmyk", "grey-jpeg", "bmp", "tiff", "webp", "ppm", "pgm", "upper"])
def test_every_common_encoding_decodes_to_the_picture(tmp_path: Path, kind: str) -> None:
    """Each file decodes to 8-bit RGB with the colours a viewer shows (16-bit scaled, transparency on black)."""
    rgb = Image.fromarray(halves())
    rgba = np.dstack([halves(), np.full((20, 40), 255, np.uint8)])
    rgba[:, :5, 3] = 0  # a transparent strip at the left
    path = tmp_path / {"upper": "x.PNG", "cmyk": "x.jpg", "grey-jpeg": "x.jpg", "bmp": "x.bmp", "tiff": "x.tif",
                       "webp": "x.webp", "ppm": "x.ppm", "pgm": "x.pgm", "tiff16-grey": "x.tiff"}.get(kind, "x.png")
    if kind.startswith(("png16", "tiff16")):
        _sixteen_bit(path, kind.endswith("colour"))
    elif kind in ("alpha", "la"):
        Image.fromarray(rgba, "RGBA").convert("LA" if kind == "la" else "RGBA").save(path)
    elif kind.startswith("palette"):
        marked = halves()
        marked[:, :5] = (0, 255, 0)  # the strip that becomes transparent
        palette = Image.fromarray(marked).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        palette.save(path, **({"transparency": int(np.asarray(palette)[0, 0])} if kind == "palette-alpha" else {}))
    else:
        {"cmyk": rgb.convert("CMYK"), "grey-jpeg": rgb.convert("L"), "pgm": rgb.convert("L")}.get(kind, rgb).save(
            path, **({"format": "PNG"} if kind == "upper" else {}))
    image = decode_image(path, 3).astype(int)
    assert image.shape == (20, 40, 3) and image.dtype == np.int64
    left, right = image[:, 10:18].mean(axis=(0, 1)), image[:, 25:].mean(axis=(0, 1))
    if kind.endswith("grey") or kind in ("grey-jpeg", "pgm", "la"):
        if kind.startswith(("png16", "tiff16")):
            assert image[0, 0].max() == 0 and image[0, -1].min() == 255  # the full 16-bit range, scaled
        else:
            assert abs(left[0] - 76) < 4 and abs(right[0] - 29) < 4  # ITU-R 601 luma of red and blue
    elif kind == "png16-colour":
        assert image[0, 0].tolist() == [255, 0, 0] and image[0, -1].tolist() == [255, 127, 255]
    else:
        assert np.abs(left - RED).max() < 8 and np.abs(right - BLUE).max() < 8
    if kind in ("alpha", "la", "palette-alpha"):
        assert image[:, :4].max() == 0  # transparent pixels composited on black


def _own_folder(root: Path) -> Path:
    """Class folders with a space, an NFD accent (as macOS writes), TIFF/PPM/upper-case files and macOS debris."""
    rng = np.random.default_rng(0)
    names = {"with space": "png", unicodedata.normalize("NFD", "café"): "tif", "Ünïcode": "JPG"}
    for k, (name, suffix) in enumerate(names.items()):
        for i in range(6):
            colour = np.clip(rng.normal(80 * k + 40, 10, (16, 16, 3)), 0, 255).astype(np.uint8)
            write(root / name / f"img {i}.{suffix}", colour, format={"JPG": "JPEG", "tif": "TIFF"}.get(suffix, "PNG"))
    write(root / "Ünïcode" / "extra.ppm", np.full((16, 16, 3), 200, np.uint8))
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(64))
    (root / "with space" / "._img 0.png").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X        " + bytes(32))
    (root / "__MACOSX" / "with space").mkdir(parents=True)
    (root / "__MACOSX" / "with space" / "._img 1.png").write_bytes(b"\0\5\26\7")
    (root / "with space" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\30ftypheic" + bytes(32))
    return root


def test_tiff_ppm_and_accented_folders_load_and_macos_debris_is_passed_over(tmp_path: Path) -> None:
    root = _own_folder(tmp_path / "own")
    (root / "classes.txt").write_text("\ufeffwith space\ncafé\nÜnïcode\n")  # a BOM, and 'café' typed in NFC
    data = load_dataset(str(root), image={"size": 16})
    assert data.labels == ("with space", "café", "Ünïcode")
    assert sum(map(len, (data.train, data.val, data.test))) == 19  # the .tif and .ppm files count
    assert data.report.unreadable == ()
    assert data.report.ignored == (f"{root / 'with space' / 'IMG_0001.HEIC'}: a .HEIC image, a type hgen does not "
                                   f"read (convert it to JPEG or PNG)",)


def test_a_folder_name_that_is_not_utf8_becomes_a_printable_class_name(tmp_path: Path, capsys) -> None:
    """A folder named in Latin-1 (an old Windows zip): the class name is valid text (a bundle stores it), and `hgen
    data` prints it and the file names on a strict UTF-8 terminal instead of dying with UnicodeEncodeError."""
    root = tmp_path / "latin"
    latin = os.fsdecode(b"caf\xe9")
    for name in (latin, "dog"):
        for i in range(4):
            write(root / name / f"{i}.png", np.full((8, 8, 3), 60 if name == "dog" else 200, np.uint8))
    (root / latin / os.fsdecode(b"bad\xe9.png")).write_bytes(b"not a png")
    data = load_dataset(str(root), image={"max_unreadable_fraction": 0.5})
    assert data.labels == ("caf\\xe9", "dog")
    by_stat = load_dataset(str(root), image={"max_unreadable_fraction": 0.5, "cache_key": "stat"})
    assert by_stat.labels == data.labels  # the (path, size, mtime) cache key hashes the name's own bytes
    "".join(data.labels).encode("utf-8")  # no surrogate left
    assert main(["data", str(root) + "?max_unreadable_fraction=0.5"]) == 0
    assert "caf\\xe9, dog" in capsys.readouterr().out
    assert main(["data", "inspect", str(root)]) == 0
    assert "bad\\udce9.png: not a readable image" in capsys.readouterr().out


def test_broken_empty_truncated_and_fake_images_are_skipped_and_named(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    for name in ("cat", "dog"):
        for i in range(8):
            write(root / name / f"{i}.jpg", np.full((12, 12, 3), 50 if name == "cat" else 150, np.uint8))
    good = io.BytesIO()
    Image.fromarray(halves()).save(good, format="JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "x.jpg").write_text("a text file named x.jpg\n")
    (root / "dog" / "link.png").symlink_to(root / "cat" / "0.jpg")  # a link to a good image counts
    (root / "dog" / "gone.png").symlink_to(root / "nowhere.png")
    with pytest.raises(UnreadableImageError, match=r"4 of 21 .*fix or remove them, or allow more with "
                                                   r"\?max_unreadable_fraction"):
        load_dataset(str(root))
    data = load_dataset(str(root), image={"max_unreadable_fraction": 0.25})
    assert sum(map(len, (data.train, data.val, data.test))) == 17
    named = sorted(Path(line.split(": ")[0]).name for line in data.report.unreadable)
    assert named == ["empty.jpg", "gone.png", "truncated.jpg", "x.jpg"]
    assert any(line.endswith("(a broken symbolic link)") for line in data.report.unreadable)


def test_an_empty_class_folder_says_how_to_fix_it(tmp_path: Path) -> None:
    root = tmp_path / "cams"
    write(root / "cat" / "1.png", np.zeros((8, 8, 3), np.uint8))
    (root / "dog").mkdir()
    with pytest.raises(EmptyDatasetError, match=r"class 'dog' has no images .*add images, or remove the folder"):
        load_dataset(str(root))


def test_a_folder_of_heic_photos_names_them_instead_of_finding_nothing(tmp_path: Path) -> None:
    (tmp_path / "phone" / "cat").mkdir(parents=True)
    (tmp_path / "phone" / "cat" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\30ftypheic")
    with pytest.raises(EmptyDatasetError, match=r"no images found .*IMG_0001\.HEIC: a \.HEIC image"):
        load_dataset(str(tmp_path / "phone"))


def test_a_windows_manifest_finds_files_by_backslash_and_other_unicode_form(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    for i in range(4):
        write(root / "imgs" / unicodedata.normalize("NFD", "café") / f"{i}.png", np.full((8, 8, 3), 200, np.uint8))
        write(root / "imgs" / "dog" / f"{i}.png", np.full((8, 8, 3), 20, np.uint8))
    rows = [f"imgs\\café\\{i}.png,café" for i in range(4)] + [f"imgs/dog/{i}.png,dog" for i in range(4)]
    (root / "manifest.csv").write_bytes(("\ufeffpath,label\r\n" + "\r\n".join(rows) + "\r\n").encode())
    data = load_dataset(str(root), image={"size": 8})
    assert data.labels == ("café", "dog") and sum(map(len, (data.train, data.val, data.test))) == 8


@pytest.mark.parametrize("name", ["run:2", "what?", "a b#c"])
def test_a_folder_whose_name_holds_spec_characters_is_read_whole(tmp_path: Path, name: str) -> None:
    """':' starts a variant and '?' parameters in a spec, but an existing folder named so is taken whole."""
    root = tmp_path / name
    for label in ("cat", "dog"):
        for i in range(3):
            write(root / label / f"{i}.png", np.full((8, 8, 3), 30 if label == "cat" else 220, np.uint8))
    assert load_dataset(str(root)).labels == ("cat", "dog")
    assert load_dataset(f"folder:{root}").labels == ("cat", "dog")
    if "?" not in name:
        assert load_dataset(f"{root}:lowres?size=16").input_shape == (16, 16, 3)


def test_inspect_into_a_path_that_is_a_file_is_a_typed_error_before_any_decoding(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cams"
    for label in ("cat", "dog"):
        write(root / label / "1.png", np.full((8, 8, 3), 30, np.uint8))
    (tmp_path / "sheets").write_text("a file where the folder should go")
    assert main(["data", "inspect", str(root), "--out", str(tmp_path / "sheets")]) == 2
    assert "cannot write contact sheets into" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before the load decoded (and cached) anything


def test_a_spec_longer_than_a_file_name_is_parsed_and_a_path_too_long_is_a_typed_error(tmp_path: Path,
                                                                                       capsys) -> None:
    """Python 3.11 raises OSError (ENAMETOOLONG) looking up a name over 255 bytes: a long query is still a query (it
    loads; an unknown key is a spec error) and a path no file system can hold is a typed error, never a traceback."""
    root = tmp_path / "cams"
    for label in ("cat", "dog"):
        for i in range(3):
            write(root / label / f"{i}.png", np.full((8, 8, 3), 30 if label == "cat" else 220, np.uint8))
    long = "a" * 300
    assert load_dataset(f"{root}:noise?variance=0.2{'0' * 300}").labels == ("cat", "dog")
    with pytest.raises(DatasetSpecError, match=r"unknown parameter 'x'"):
        load_dataset(f"{root}:noise?variance=0.2&x={long}")
    for spec in (str(tmp_path / long), f"folder:{tmp_path / long}", f"{tmp_path / long}:noise?variance=0.2"):
        with pytest.raises(DatasetSpecError, match=r"cannot be looked up: File name too long"):
            load_dataset(spec)
    assert main(["data", f"{tmp_path / 'nowhere'}:noise?variance=0.2&x={long}"]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", f"{root}:noise?variance=0.2&x={long}"]) == 2
    assert main(["data", str(tmp_path / long)]) == 2
    assert main(["data", "inspect", f"yolo:{tmp_path / long}"]) == 2
    assert "cannot be looked up" in capsys.readouterr().err


def test_a_16_bit_set_cached_before_the_high_byte_rule_is_decoded_again(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """16-bit pixels became 8 bits by round(v / 65535 * 255) before they took their high byte (`eight_bits`, the
    device's rule): a set cached under the old rule must not be read back, or training sees other values than the
    device. 0xFF00 shows it: 254 by the old rule, 255 by the high byte."""
    from hgen.compiler.data import cache, images

    root = tmp_path / "sixteen"
    for label in ("cat", "dog"):
        for i in range(3):
            (root / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / label / f"{i}.png"), np.full((8, 8), 0xFF00, np.uint16))

    def pixels() -> set[int]:
        data = load_dataset(str(root), image={"size": 8})
        return {round(float(v) * 255) for s in (data.train, data.val, data.test) for v in np.unique(np.asarray(s.x))}

    with monkeypatch.context() as old:  # what the previous release wrote into the cache
        old.setattr(cache, "CACHE_VERSION", 1)
        old.setattr(images, "eight_bits", lambda a: np.clip(a / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8))
        assert pixels() == {254}
    assert pixels() == {255}


def test_a_name_too_long_to_look_up_given_with_format_is_a_typed_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`hgen data --format folder <300 characters>` and its inspect: exit 2 naming the path, not an OSError."""
    from hgen.compiler.cli.main import main

    long = "x" * 300
    assert main(["data", "--format", "folder", long]) == 2
    assert main(["data", "inspect", f"folder:{long}"]) == 2
    assert capsys.readouterr().err.count("cannot be looked up") == 2


def test_one_class_is_refused_before_decoding_and_inspect_warns(tmp_path: Path, capsys) -> None:
    """A folder of one class used to train for the whole compile and then fail (exit 1) in the simulated crowd."""
    root = tmp_path / "cams"
    for i in range(6):
        write(root / "cat" / f"{i}.png", np.full((8, 8, 3), i * 40, np.uint8))
    with pytest.raises(EmptyDatasetError, match=r"one class found \(cat\); a classifier needs at least two"):
        load_dataset(str(root))
    assert main(["compile", "--dataset", f"{root}?size=8", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "summary.json").exists()
    capsys.readouterr()
    assert main(["data", "inspect", "--out", str(tmp_path / "sheets"), str(root)]) == 0  # options first, as users type
    assert "warning   one class: a classifier needs at least two" in capsys.readouterr().out


def test_inspect_warns_of_a_class_the_validation_or_test_split_never_shows(tmp_path: Path, capsys) -> None:
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "dog")), ("test", ("cat",))):
        for name in classes:
            write(tmp_path / "cams" / split / name / "1.png", np.zeros((8, 8, 3), np.uint8))
    write(tmp_path / "cams" / "train" / "cat" / "strip.png", np.zeros((7, 600, 3), np.uint8))  # a scan line
    assert main(["data", "inspect", str(tmp_path / "cams")]) == 0
    out = capsys.readouterr().out
    assert "warning   no test images of 'dog': accuracy is measured without it" in out
    assert "no val images" not in out
    assert "warning   1 image(s) more than 4x longer on one side than the input: stretched" in out


def test_a_misspelt_or_malformed_spec_parameter_says_what_was_meant(tmp_path: Path) -> None:
    root = tmp_path / "cams"
    for name in ("cat", "dog"):
        write(root / name / "1.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetSpecError, match=r"unknown parameter 'sise' \(did you mean 'size'\?\); valid: .*size"):
        load_dataset(f"{root}?sise=32")
    with pytest.raises(Exception, match=r"size=64x48\), got 'abc'"):
        load_dataset(f"{root}?size=abc")


def test_a_16_bit_pgm_or_ppm_decodes_to_the_pixels_the_device_sees(tmp_path: Path) -> None:
    """Pillow opens a 16-bit PGM as mode I and rescales PNM samples by the header's maxval; the device reads the file
    with OpenCV (IMREAD_UNCHANGED, samples as stored) and keeps the high byte. A 12-bit ramp trained at 0..255 while
    the device saw 0..15; the same goes for a maxval-4095 PGM and a 16-bit PPM."""
    from hgen.runtime.preprocess import eight_bits

    ramp = (np.arange(32 * 64).reshape(32, 64) * 4095 // (32 * 64 - 1)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.pgm"), ramp)
    (tmp_path / "g12.pgm").write_bytes(b"P5\n64 32\n4095\n" + ramp.astype(">u2").tobytes())
    cv2.imwrite(str(tmp_path / "c16.ppm"), np.stack([ramp, ramp // 2, ramp * 16], -1))
    for name, channels in (("g16.pgm", 1), ("g12.pgm", 1), ("c16.ppm", 3)):
        device = eight_bits(cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED))
        device = device[..., None] if device.ndim == 2 else device[..., ::-1]  # BGR -> RGB
        assert np.array_equal(decode_image(tmp_path / name, channels), device), name
    assert decode_image(tmp_path / "g16.pgm", 1).max() == 15
    png = _sixteen_bit(tmp_path / "g16.png", colour=False)  # 16-bit PNG: unchanged, it already matched
    assert np.array_equal(decode_image(png, 1)[..., 0], eight_bits(cv2.imread(str(png), cv2.IMREAD_UNCHANGED)))


def test_dunder_names_are_data_and_linked_sub_folders_are_read_once(tmp_path: Path) -> None:
    """Only hidden names (`.DS_Store`, `._*`) and `__MACOSX` are passed over: a `__background__` class and a
    `__0001.jpg` file are the user's data. A linked sub-folder of a class folder is read (Python 3.11's rglob skipped
    it without a word); a link back to a folder already read is named and not followed (no endless loop)."""
    root = tmp_path / "cams"
    for name in ("__background__", "cat", "dog"):
        for i in range(4):
            write(root / name / f"{i}.png", np.full((8, 8, 3), 30 * i, np.uint8))
    write(root / "cat" / "__0001.png", np.zeros((8, 8, 3), np.uint8))
    write(root / "cat" / ".hidden.png", np.zeros((8, 8, 3), np.uint8))
    write(root / "__MACOSX" / "cat" / "x.png", np.zeros((8, 8, 3), np.uint8))
    for i in range(3):
        write(tmp_path / "elsewhere" / f"{i}.png", np.zeros((8, 8, 3), np.uint8))
    (root / "dog" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "dog" / "again").symlink_to(root / "dog", target_is_directory=True)  # a loop
    data = load_dataset(str(root), image={"size": 8})
    assert data.labels == ("__background__", "cat", "dog")
    assert data.report.files == 4 + 5 + 4 + 3  # __background__, cat with __0001, dog with the linked folder
    assert data.report.ignored == (f"{root / 'dog' / 'again'}: a link to {os.path.realpath(root / 'dog')}, a folder "
                                   "already read (not followed again)",)


def test_a_class_only_in_val_is_an_error_naming_it_and_its_folder(tmp_path: Path, capsys) -> None:
    """`val/dogs` beside `train/dog` (a typo) was a class with no training images, accepted without a word."""
    root = tmp_path / "cams"
    for split, names in (("train", ("cat", "dog")), ("val", ("cat", "dog", "dogs"))):
        for name in names:
            for i in range(4):
                write(root / split / name / f"{i}.png", np.full((8, 8, 3), 30 * i, np.uint8))
    with pytest.raises(EmptyDatasetError, match=rf"class 'dogs' has 4 image\(s\) but none in train \(they are in "
                                                rf"{root / 'val' / 'dogs'}\).* if the name is a typo, rename"):
        load_dataset(str(root))
    assert main(["compile", "--dataset", f"{root}?size=16", "--out", str(tmp_path / "out")]) == 2
    capsys.readouterr()
    assert main(["data", "inspect", str(root)]) == 0  # inspect shows it, to find the typo
    out = capsys.readouterr().out
    assert "warning   the compile refuses this: class 'dogs' has 4 image(s) but none in train" in out


@pytest.mark.parametrize("layout, message", [
    ("no-train", r"the train split is empty: the data set has val and test but no train split; add one"),
    ("tiny", r"the val split is empty: too few images to give it one at a share of 0.15 \(that takes 4 images in a "
             r"class\); add images, or raise its share.*; the test split is empty"),
    ("zero-share", r"the test split is empty: the data set has no test split of its own and its share is 0 \(shares "
                   r"0.8,0.2,0\); give test a share")])
def test_an_empty_split_is_refused_before_training_with_its_cause(tmp_path: Path, capsys, layout: str,
                                                                  message: str) -> None:
    """No train split was a Keras traceback (exit 1); a set too small to give val and test an image, or a zero
    share, failed after training. The compile refuses them before training (exit 2), saying why and what to do;
    loading and `hgen data inspect` still show the set, with the same words as a warning."""
    root = tmp_path / "cams"
    splits = {"no-train": ("val/", "test/"), "tiny": ("",), "zero-share": ("",)}[layout]
    for split in splits:
        for name in ("cat", "dog"):
            for i in range(3 if layout == "tiny" else 8):
                write(root / f"{split}{name}" / f"{i}.png", np.full((8, 8, 3), 30 * i, np.uint8))
    spec = f"{root}?size=16" + ("&shares=0.8,0.2,0" if layout == "zero-share" else "")  # a size lenet5 takes
    assert main(["compile", "--dataset", spec, "--out", str(tmp_path / "out")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out" / "summary.json").exists()
    from hgen.compiler.data import require_splits

    with pytest.raises(EmptyDatasetError, match=message):
        require_splits(load_dataset(spec))
    assert main(["data", "inspect", spec]) == 0
    assert "warning   the compile refuses this: the " in capsys.readouterr().out
