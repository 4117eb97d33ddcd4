"""A user's own labelled manifests: CSV, YOLO (`data.yaml`) and COCO (one file, or one instances file per split),
with errors that name the manifest's line, file or annotation.

Every test generates its data in tmp_path with test_data_formats' image helpers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_formats import CLASSES, COLOURS, _cache, make_folder, picture, save  # noqa: F401 (_cache: autouse)

from hgen.compiler.data import load_dataset
from hgen.compiler.data.detection import is_detection_spec, load_detection_dataset
from hgen.compiler.data.formats import detect_format
from hgen.compiler.errors import DatasetError, DatasetFormatError, LabelError, MissingImageError


# ---- CSV ---------------------------------------------------------------------------------------------------------

def make_csv(root: Path, with_split: bool = True) -> Path:
    rng = np.random.default_rng(2)
    rows = ["path,label" + (",split" if with_split else "")]
    for name in CLASSES:
        for i in range(6):
            rel = f"pics/{name}-{i}.{'png' if i % 2 else 'jpeg'}"
            save(picture(rng, COLOURS[name], (30 + 5 * i, 40)), root / rel)
            split = ("train", "train", "train", "train", "val", "test")[i]
            rows.append(f"{rel},{name}" + (f",{split}" if with_split else ""))
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


def test_csv_manifest_with_and_without_split_column(tmp_path):
    manifest = make_csv(tmp_path / "set")
    assert detect_format(manifest).name == "csv" and detect_format(tmp_path / "set").name == "csv"
    data = load_dataset(str(manifest), image={"size": 32})
    assert data.labels == CLASSES and (len(data.train), len(data.val), len(data.test)) == (12, 3, 3)
    plain = make_csv(tmp_path / "plain", with_split=False)
    data = load_dataset(f"csv:{plain}", image={"size": 32}, format_options={"shares": (0.5, 0.25, 0.25)})
    assert (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)  # 6 per class: 2 / 2 / 2
    assert data.name.endswith(":clean?size=32x32&shares=0.5,0.25,0.25")  # format options are in the spec
    again = load_dataset(data.name)
    np.testing.assert_array_equal(again.val.y, data.val.y)


def test_csv_image_listed_twice_is_kept_once_or_a_label_error_naming_both_lines(tmp_path):
    """The same path twice was loaded twice: with another label (which one is right?) or another split (tested on
    what it trained on) it is a LabelError naming both lines; an exact copy is left out and reported."""
    manifest = make_csv(tmp_path / "set")
    text = manifest.read_text()
    manifest.write_text(text + "./pics/cat-0.jpeg,cat,train\n")  # line 20, a copy of line 2 spelt otherwise
    data = load_dataset(str(manifest), image={"size": 32})
    assert sum(map(len, (data.train, data.val, data.test))) == 18
    assert data.report.dropped == (f"{manifest}:20: ./pics/cat-0.jpeg is listed again (as on line 2), left out",)
    manifest.write_text(text + "pics/cat-0.jpeg,dog,train\n")
    with pytest.raises(LabelError, match=r"manifest\.csv:20: .*cat-0\.jpeg is labelled 'dog' here and 'cat' on "
                                         r"line 2"):
        load_dataset(str(manifest))
    manifest.write_text(text + "pics/cat-0.jpeg,cat,test\n")
    with pytest.raises(LabelError, match=r"manifest\.csv:20: .*cat-0\.jpeg is in split test here and train on line 2"):
        load_dataset(str(manifest))


def test_csv_errors_name_the_manifest_line_and_files(tmp_path):
    manifest = make_csv(tmp_path / "set")
    text = manifest.read_text()
    manifest.write_text(text + "pics/nowhere.png,cat,train\n")
    with pytest.raises(MissingImageError, match="nowhere.png"):
        load_dataset(str(manifest))
    manifest.write_text(text + "pics/cat-0.jpeg,cat,holdout\n")
    with pytest.raises(LabelError, match=r"manifest.csv:20.*holdout"):
        load_dataset(str(manifest))
    manifest.write_text("file,class\na.png,cat\n")
    with pytest.raises(DatasetFormatError, match="'path' column"):
        load_dataset(str(manifest))


# ---- YOLO --------------------------------------------------------------------------------------------------------

def make_yolo(root: Path) -> Path:
    rng = np.random.default_rng(3)
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        for i in range(n):
            w, h = (120, 80) if i % 2 else (64, 64)
            image = np.full((h, w, 3), 30, np.uint8)
            x0, y0, x1, y1 = w // 4, h // 4, w // 2, h // 2
            image[y0:y1, x0:x1] = COLOURS[CLASSES[i % 3]]
            save(image, root / "images" / split / f"{split}{i}.{'jpg' if i % 2 else 'png'}")
            label = root / "labels" / split / f"{split}{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
            label.write_text(f"{i % 3} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
    del rng
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\ntest: images/test\n"
                                    "names:\n  0: cat\n  1: dog\n  2: owl\n")
    return root


def test_yolo_set_loads_as_detection_data_with_boxes(tmp_path):
    root = make_yolo(tmp_path / "yolo")
    assert detect_format(root).name == "yolo" and is_detection_spec(str(root))
    assert not is_detection_spec(str(make_folder(tmp_path / "cams", per_class=2, corrupt=False)))
    data = load_detection_dataset(str(root), image={"size": 64})
    assert data.labels == CLASSES and data.input_shape == (64, 64, 3)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)
    for x, boxes in zip(data.train.x, data.train.boxes):
        assert boxes.shape == (1, 5)
        np.testing.assert_allclose(boxes[0, :4], [0.25, 0.25, 0.5, 0.5], atol=1e-4)
        x0, y0, x1, y1 = (int(v * 64) for v in boxes[0, :4])
        assert x[y0 + 2:y1 - 2, x0 + 2:x1 - 2].mean() > 0.2  # the coloured object is inside its box
    letter = load_detection_dataset(f"{root}?size=64&resize=letterbox")
    tops = sorted(round(float(b[0, 1]), 3) for b in letter.train.boxes)
    assert tops == [0.25, 0.25, 0.25, 0.324, 0.324, 0.324]  # 120x80 images: boxes moved down by the padding
    with pytest.raises(DatasetError, match="detection"):
        load_dataset(str(root))


@pytest.mark.parametrize("line, message", [
    ("7 0.5 0.5 0.2 0.2", r"train0.txt:1: class 7 is out of range"),
    ("0 95 50 30 20", r"train0.txt:1: values outside \[0, 1\] .*not pixels"),
    ("0 0.5 0.5", r"train0.txt:1: expected 'class cx cy w h'"),
])
def test_yolo_bad_labels_name_the_file_and_line(tmp_path, line, message):
    """Under on_unreadable=error a bad line stops the load; under skip (the default) its image (1 of 10, within
    max_unreadable_fraction) is left out and named in the report."""
    root = make_yolo(tmp_path / "yolo")
    (root / "labels" / "train" / "train0.txt").write_text(line + "\n")
    with pytest.raises(LabelError, match=message):
        load_detection_dataset(str(root), image={"on_unreadable": "error"})
    data = load_detection_dataset(str(root))
    assert (len(data.train), len(data.val), len(data.test)) == (5, 2, 2)
    assert len(data.report.bad_labels) == 1 and re.search(message, data.report.bad_labels[0])


# ---- COCO --------------------------------------------------------------------------------------------------------

def make_coco(root: Path) -> Path:
    images, annotations = [], []
    for i in range(8):
        w, h = 100 + 10 * i, 80
        image = np.full((h, w, 3), 20, np.uint8)
        image[10:50, 20:60] = COLOURS[CLASSES[i % 3]]
        save(image, root / "images" / f"im{i}.jpg")
        images.append({"id": i + 1, "file_name": f"im{i}.jpg", "width": w, "height": h})
        annotations.append({"id": 100 + i, "image_id": i + 1, "category_id": 10 + i % 3, "bbox": [20, 10, 40, 40],
                            "iscrowd": 0, "segmentation": [[20, 10, 60, 10, 60, 50]], "area": 1600})
    categories = [{"id": 10 + k, "name": name} for k, name in enumerate(CLASSES)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_file_loads_boxes_normalised(tmp_path):
    path = make_coco(tmp_path / "coco")
    assert detect_format(path).name == "coco"
    data = load_detection_dataset(str(path), image={"size": 48}, format_options={"shares": (0.5, 0.25, 0.25)})
    assert data.labels == CLASSES and sum(map(len, (data.train, data.val, data.test))) == 8
    first = next(b for b in data.train.boxes)
    assert first.shape == (1, 5) and first[0, 1] == pytest.approx(10 / 80) and first[0, 3] == pytest.approx(50 / 80)


def test_coco_missing_images_and_bad_boxes_are_named(tmp_path):
    path = make_coco(tmp_path / "coco")
    (tmp_path / "coco" / "images" / "im3.jpg").unlink()
    with pytest.raises(MissingImageError, match="im3.jpg"):
        load_detection_dataset(str(path))
    path = make_coco(tmp_path / "coco2")
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [90, 10, 40, 40]
    path.write_text(json.dumps(data))
    with pytest.raises(LabelError, match=r"annotations\[0\] \(id 100\).*outside image im0.jpg"):
        load_detection_dataset(str(path))


def test_coco_folder_with_one_instances_file_per_split(tmp_path):
    root = tmp_path / "site"
    single = make_coco(tmp_path / "one")
    data = json.loads(single.read_text())
    (root / "annotations").mkdir(parents=True)
    for split, ids in (("train", range(0, 6)), ("val", range(6, 8))):
        images = [im for im in data["images"] if im["id"] - 1 in ids]
        keep = {im["id"] for im in images}
        part = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(part))
        for im in images:
            target = root / f"{split}2017" / im["file_name"]
            target.parent.mkdir(exist_ok=True)
            target.write_bytes((tmp_path / "one" / "images" / im["file_name"]).read_bytes())
    assert detect_format(root).name == "coco"
    loaded = load_detection_dataset(str(root), image={"size": 32})
    assert (len(loaded.train), len(loaded.val)) == (5, 2) and len(loaded.test) == 1  # test carved from train
    assert loaded.report.carved == ("test",)


# ---- inspect -----------------------------------------------------------------------------------------------------

def test_inspect_prints_counts_and_writes_a_contact_sheet_per_class(tmp_path, capsys):
    from hgen.compiler.cli.main import main

    root = make_folder(tmp_path / "cams", per_class=5)
    assert main(["data", "inspect", str(root), "--out", str(tmp_path / "sheets"), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "format    folder" in out and "garbage.jpg" in out and "unreadable 2" in out
    assert "RGB" in out and "width" in out
    row = next(line for line in out.splitlines() if line.startswith("cat "))
    assert row.split()[-1] == "5"
    sheets = sorted((tmp_path / "sheets").glob("*.png"))
    assert [p.name for p in sheets] == ["000_cat.png", "001_dog.png", "002_owl.png"]
    assert Image.open(sheets[0]).mode == "RGB"
    yolo = make_yolo(tmp_path / "yolo")
    assert main(["data", "inspect", str(yolo), "--out", str(tmp_path / "ysheets")]) == 0
    assert "format    yolo (detect)" in capsys.readouterr().out
    assert len(list((tmp_path / "ysheets").glob("*.png"))) == 3
    assert main(["data", "inspect", str(tmp_path / "nowhere")]) == 3
    clean = make_folder(tmp_path / "clean", per_class=3, corrupt=False)
    assert main(["data", str(clean), "--size", "32"]) == 0
    assert "(32, 32, 3)" in capsys.readouterr().out
