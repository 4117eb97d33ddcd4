"""A detection set with a few bad labels (a YOLO line with a class out of range or pixel coordinates, an unreadable
label file, a COCO annotation with an unknown category or a box outside its image) follows the images'
unreadable-file policy: under `skip` (default) the image is left out, named ("file:line: what is wrong") in the
load report, `hgen data inspect` and the warnings the compile prints, and too many of them stop the load; under
`error` the first one stops it, as before. Every set is generated here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.cli.main import main
from hgen.compiler.data import load_warnings, read_user, user_location
from hgen.compiler.data.detection import DetectionDataset, load_detection_dataset
from hgen.compiler.data.inspect import inspect_dataset
from hgen.compiler.errors import LabelError

GOOD_LINE = "0 0.5 0.5 0.25 0.25"
SIZE = {"size": 32}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))


def _image(path: Path, shade: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), shade, np.uint8)).save(path)


def yolo(root: Path, n: int, bad: dict[int, bytes] | None = None) -> Path:
    """`n` images (70 % train, 15 % val, 15 % test), each labelled with one box of class 0 or 1; `bad` replaces the
    label file of image i with its bytes."""
    for i in range(n):
        split = "train" if i < 0.7 * n else "val" if i < 0.85 * n else "test"
        _image(root / "images" / split / f"im{i:03d}.png", 5 * i % 250)
        label = root / "labels" / split / f"im{i:03d}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_bytes((bad or {}).get(i, f"{i % 2} 0.5 0.5 0.25 0.25\n".encode()))
    (root / "data.yaml").write_text("train: images/train\nval: images/val\ntest: images/test\nnames: [cat, dog]\n")
    return root


def _kept(spec: str) -> dict[str, list[str]]:
    """The file names each split kept, in its order (the reader's record of them)."""
    _, loaded, _ = read_user(user_location(spec), seed=0, limit=None, image=SIZE, format_options=None, task="detect")
    return {split: [Path(p).name for p in part.paths] for split, part in loaded.splits.items()}


def _count(data: DetectionDataset) -> int:
    return len(data.train) + len(data.val) + len(data.test)


def _boxes(data: DetectionDataset) -> int:
    return sum(len(b) for part in (data.train, data.val, data.test) for b in part.boxes)


def test_a_few_bad_yolo_label_files_leave_their_images_out_and_are_named(tmp_path: Path) -> None:
    """3 of 40 images (within max_unreadable_fraction 0.1): a class out of range after a good line (the whole image is
    left out, not only the line), pixel coordinates, and a file that is not text."""
    bad = {3: f"{GOOD_LINE}\n7 0.5 0.5 0.2 0.2\n".encode(), 10: b"0 320 240 64 48\n", 35: b"\xff\xfe\x00\x01 binary"}
    root = yolo(tmp_path / "set", 40, bad)
    data = load_detection_dataset(str(root), image=SIZE)
    assert _count(data) == 37 and _boxes(data) == 37  # no image of the bad ones, and none trains without its box
    kept = _kept(str(root))
    assert {"im003.png", "im010.png", "im035.png"}.isdisjoint(kept["train"] + kept["val"] + kept["test"])
    labels = root / "labels"
    assert data.report is not None and data.report.files == 40 and len(data.report.bad_labels) == 3
    named = sorted(data.report.bad_labels)
    assert named[0].startswith(f"{labels / 'test' / 'im035.txt'}: not a readable label file")
    assert named[1] == (f"{labels / 'train' / 'im003.txt'}:2: class 7 is out of range (data.yaml names 2 classes, "
                        "0..1)")
    assert named[2].startswith(f"{labels / 'train' / 'im010.txt'}:1: values outside [0, 1]")
    assert data.report.unreadable == ()
    warning = next(w for w in load_warnings(data) if "labels cannot be used" in w)  # what the compile logs
    assert warning.startswith("3 of 40 images left out because their labels cannot be used")
    with pytest.raises(LabelError, match=r"im003\.txt:2: class 7 is out of range"):
        load_detection_dataset(str(root), image={**SIZE, "on_unreadable": "error"})


def test_more_bad_label_files_than_the_fraction_stop_the_load_naming_them(tmp_path: Path) -> None:
    root = yolo(tmp_path / "set", 20, {i: b"0 0.5 0.5 0.2\n" for i in (1, 2, 3)})  # 3 of 20: over 0.1
    with pytest.raises(LabelError, match=r"set/data\.yaml: 3 of 20 images have labels that cannot be used \(over the "
                       r"max_unreadable_fraction of 0\.1.*im001\.txt:1: expected 'class cx cy w h'.*im003\.txt"):
        load_detection_dataset(str(root), image=SIZE)
    data = load_detection_dataset(f"{root}?max_unreadable_fraction=0.2", image=SIZE)
    assert _count(data) == 17 and len(data.report.bad_labels) == 3
    pixels = yolo(tmp_path / "pixels", 10, {i: b"1 320 240 64 48\n" for i in range(10)})  # labelled in pixels
    with pytest.raises(LabelError, match=r"10 of 10 images .*im000\.txt:1: values outside \[0, 1\].*not pixels"):
        load_detection_dataset(str(pixels), image={**SIZE, "max_unreadable_fraction": 1.0})


def test_inspect_and_hgen_data_name_the_images_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hgen data inspect` lists every image left out for its labels, beyond the fraction too (inspecting is how one
    finds them); `hgen data` shows the warning the compile prints."""
    root = yolo(tmp_path / "set", 20, {i: b"5 0.5 0.5 0.2 0.2\n" for i in (0, 1, 2, 3)})
    lines = inspect_dataset(str(root), image=SIZE).lines()
    start = lines.index("bad labels 4 image(s) left out (their labels cannot be used)")
    assert lines[start + 1:start + 5] == [f"  {root / 'labels' / 'train' / f'im00{i}.txt'}:1: class 5 is out of "
                                          "range (data.yaml names 2 classes, 0..1)" for i in range(4)]
    assert main(["data", f"{root}?max_unreadable_fraction=0.25", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "splits    train 10, validation 3, test 3" in out
    assert "warning   4 of 20 images left out because their labels cannot be used" in out


def coco(root: Path, extra: list[dict], n: int = 20) -> Path:
    """`n` 40x30 images with one box each (categories 3 'car', 9 'bus'), one JSON without splits."""
    entries, annotations = [], []
    for i in range(n):
        _image(root / "images" / f"im{i:03d}.png", 7 * i % 250)
        entries.append({"id": i + 1, "file_name": f"im{i:03d}.png", "width": 40, "height": 30})
        annotations.append({"id": 100 + i, "image_id": i + 1, "category_id": (3, 9)[i % 2], "bbox": [4, 4, 12, 10]})
    path = root / "instances.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations + extra,
                                "categories": [{"id": 3, "name": "car"}, {"id": 9, "name": "bus"}]}))
    return path


def test_bad_coco_annotations_leave_their_image_out_and_keep_the_split_of_the_others(tmp_path: Path) -> None:
    """An unknown category and a box past the image cost their images (with their good boxes); the seeded split of
    every other image is the one it has once the labels are fixed, so fixing a label moves no other image."""
    unknown = {"id": 900, "image_id": 5, "category_id": 4, "bbox": [1, 1, 5, 5]}
    outside = {"id": 901, "image_id": 12, "category_id": 9, "bbox": [30, 4, 20, 10]}
    path = coco(tmp_path / "coco", [unknown, outside])
    data = load_detection_dataset(str(path), image=SIZE)
    assert _count(data) == 18 and _boxes(data) == 18
    assert data.report is not None and data.report.bad_labels == (
        f"{path}: annotations[20] (id 900): category_id 4 is not in 'categories'",
        f"{path}: annotations[21] (id 901): the box [30, 4, 20, 10] reaches outside image im011.png (40 x 30) by 10 "
        "pixels (tolerance 1; a spec ?tolerance=10 would clip it)")
    fixed = _kept(str(coco(tmp_path / "fixed", [])))
    assert _kept(str(path)) == {split: [name for name in names if name not in ("im004.png", "im011.png")]
                                for split, names in fixed.items()}
    with pytest.raises(LabelError, match=r"annotations\[20\] \(id 900\): category_id 4 is not in 'categories'"):
        load_detection_dataset(str(path), image={**SIZE, "on_unreadable": "error"})
    stray = coco(tmp_path / "stray", [{"id": 902, "image_id": 77, "category_id": 3, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(LabelError, match=r"annotations\[20\] \(id 902\): image_id 77 is not in 'images'"):
        load_detection_dataset(str(stray), image=SIZE)  # no image to leave out instead: the JSON does not hold up



def test_a_set_with_no_box_left_once_the_bad_labels_are_out_is_an_empty_set(tmp_path: Path) -> None:
    """40 empty label files and one in pixels: the format's 'no box at all' check counted the bad file as labels, and
    once it was left out a detector trained on background only (a warning was all)."""
    from hgen.compiler.errors import EmptyDatasetError

    root = yolo(tmp_path / "set", 40, {i: b"" for i in range(40)} | {5: b"0 320 240 64 48\n"})
    with pytest.raises(EmptyDatasetError, match=r"no box is left once the 1 images whose labels cannot be used .*"
                       r"im005\.txt:1: values outside \[0, 1\]"):
        load_detection_dataset(str(root), image=SIZE)
