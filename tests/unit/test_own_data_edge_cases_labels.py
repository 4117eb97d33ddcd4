"""Detection sets as people export them, generated here: YOLO from Ultralytics and Roboflow (names as a list or a
mapping, `path:` relative, absolute or stale, trailing blank lines, background images, orphan label files, boxes a
little past the edge, polygons, pose lines, empty boxes) and COCO (category ids with gaps, images without
annotations, crowd regions, zero-width boxes, a phone photo the labelling tool did not rotate). Good labels load,
bad entries are left out and named, and nothing ends in a raw traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.data.detection import load_detection_dataset
from hgen.compiler.errors import DatasetFormatError, LabelError

W, H = 64, 48


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))


def image(path: Path, exif_orientation: int = 1, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8))
    exif = picture.getexif()
    if exif_orientation != 1:
        exif[0x0112] = exif_orientation
    picture.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None, exif=exif.tobytes())
    return path


def yolo(root: Path, labels: dict[str, str], layout: str = "ultralytics") -> Path:
    """images/<split>/NAME.jpg + labels/<split>/NAME.txt (or Roboflow's <split>/images, <split>/labels); a label
    text of None means no label file (a background image)."""
    for name, text in labels.items():
        split = "val" if name.startswith("val") else "train"
        folder = {"ultralytics": root / "images" / split, "roboflow": root / split / "images"}[layout]
        image(folder / f"{name}.jpg")
        if text is not None:
            txt = (root / "labels" / split if layout == "ultralytics" else root / split / "labels") / f"{name}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(text)
    return root


GOOD = {"val0": "0 0.5 0.5 0.2 0.2\n", "val1": "1 0.5 0.5 0.4 0.4\n",
        **{f"t{i}": "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n\n\n" for i in range(4)}}


@pytest.mark.parametrize("names", ["names: [person, 'café car']", "names:\n  0: person\n  1: café car",
                                   "names:\n  '1': café car\n  '0': person"])
@pytest.mark.parametrize("where", ["none", "relative", "absolute", "stale"])
def test_yolo_names_as_list_or_mapping_and_every_kind_of_path(tmp_path: Path, names: str, where: str) -> None:
    """A `path:` that names no folder here (Ultralytics' `../datasets/NAME`, or its author's disk) falls back to the
    YAML's folder instead of failing; trailing blank lines and a background image are fine."""
    data = yolo(tmp_path / "set", {**GOOD, "background": None})
    path = {"none": "", "relative": "path: .", "absolute": f"path: {data}", "stale": "path: ../datasets/set"}[where]
    (data / "data.yaml").write_text(f"{path}\ntrain: images/train\nval: images/val\n{names}\n")
    loaded = load_detection_dataset(str(data), image={"size": 32})
    assert loaded.labels == ("person", "café car")
    everything = [*loaded.train.boxes, *loaded.val.boxes, *loaded.test.boxes]
    assert len(everything) == 7 and sorted(len(b) for b in everything) == [0, 1, 1, 2, 2, 2, 2]


def test_roboflow_export_paths_and_an_absent_test_split(tmp_path: Path) -> None:
    """Roboflow writes `train: ../train/images` beside train/, and names a test split it may not hold: read as
    Ultralytics reads it, the absent test split noted."""
    data = yolo(tmp_path / "robo", GOOD, layout="roboflow")
    (data / "data.yaml").write_text("train: ../train/images\nval: ../val/images\ntest: ../test/images\n\nnc: 2\n"
                                    "names: ['a', 'b']\n\nroboflow:\n  workspace: w\n")
    loaded = load_detection_dataset(str(data))
    assert sum(map(len, (loaded.train, loaded.val, loaded.test))) == 6
    assert loaded.report.carved == ("test",)
    assert any("split path '../test/images' does not exist" in line for line in loaded.report.ignored)


def test_yolo_boxes_past_the_edge_polygons_pose_lines_and_empty_boxes(tmp_path: Path) -> None:
    labels = {**GOOD,
              "edge": "0 0.005 0.5 0.02 0.2\n0 0.995 0.5 0.02 0.2\n",  # corners at -0.005 and 1.005: clipped
              "cut": "1 0.95 0.5 0.3 0.2\n",  # an object the frame cuts: corner at 1.1, accepted as Ultralytics does
              "poly": "1 0.1 0.1 0.4 0.1 0.4 0.5 0.1 0.5\n",  # a segmentation polygon: its bounding box
              "flat": "0 0.5 0.5 0 0.2\n0 0.5 0.5 0.1 0.1\n",  # a zero-width box: left out, the other kept
              "crlf": "0 0.5 0.5 0.2 0.2 \r\n\r\n"}
    data = yolo(tmp_path / "set", labels)
    (data / "labels" / "train" / "renamed.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # its image is gone
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    loaded = load_detection_dataset(str(data))
    everything = [b for split in (loaded.train, loaded.val, loaded.test) for b in split.boxes]
    assert sum(len(b) for b in everything) == 2 + 2 * 4 + 2 + 1 + 1 + 1 + 1
    corners = np.concatenate(everything)
    assert corners[:, :4].min() == 0.0 and corners[:, :4].max() == 1.0
    assert any(np.allclose(b[:, :4], [[0.1, 0.1, 0.4, 0.5]]) for b in everything if len(b) == 1)
    assert any(np.allclose(b[:, :4], [[0.8, 0.4, 1.0, 0.6]]) for b in everything if len(b) == 1)  # clipped
    assert loaded.report.dropped == (f"{data / 'labels' / 'train' / 'flat.txt'}:1: the box has no area "
                                     f"('0 0.5 0.5 0 0.2'), left out",)
    assert loaded.report.ignored == (f"{data / 'labels' / 'train' / 'renamed.txt'}: a label file without an image",)
    pose = yolo(tmp_path / "pose", {"val0": "0 0.5 0.5 0.2 0.2 0.5 0.5 2\n",
                                    **{f"t{i}": "0 0.5 0.5 0.4 0.4 0.45 0.45 2\n" for i in range(3)}})
    (pose / "data.yaml").write_text("train: images/train\nval: images/val\nkpt_shape: [1, 3]\nnames: [person]\n")
    poses = load_detection_dataset(str(pose))
    assert all(np.allclose(b[:, :4], [[0.3, 0.3, 0.7, 0.7]]) for b in poses.train.boxes)


@pytest.mark.parametrize("text, message", [
    (b"0 0.5 0.5 1.2 0.2\n", r"bad\.txt:1: values outside \[0, 1\].*\?tolerance=0\.2 would accept it"),
    (b"nan 0.5 0.5 0.1 0.1\n", r"bad\.txt:1: not finite numbers"),
    (b"inf 0.5 0.5 0.1 0.1\n", r"bad\.txt:1: not finite numbers"),
    (b"\xff\xfe\x00\x01 binary", r"bad\.txt: not a readable label file"),
])
def test_yolo_labels_that_cannot_be_read_are_label_errors(tmp_path: Path, text: bytes, message: str) -> None:
    data = yolo(tmp_path / "set", {**GOOD, "bad": ""})
    (data / "labels" / "train" / "bad.txt").write_bytes(text)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(LabelError, match=message):
        load_detection_dataset(str(data))


def test_a_size_a_little_past_one_loads_and_the_hinted_tolerance_accepts_further_ones(tmp_path: Path) -> None:
    data = yolo(tmp_path / "set", {**GOOD, "edge": "0 0.01 0.5 1.01 0.2\n", "far": "0 0.5 0.5 1.1 0.2\n"})
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(LabelError, match=r"far\.txt:1: .*\?tolerance=0\.1 would accept it"):
        load_detection_dataset(str(data))  # edge.txt (a size 0.01 past 1) passed, far.txt (0.1) did not
    loaded = load_detection_dataset(f"{data}?tolerance=0.1")
    assert max(float(b[:, 2].max()) for s in (loaded.train, loaded.val, loaded.test) for b in s.boxes) == 1.0


def coco(root: Path, extra: list[dict], images: int = 6) -> Path:
    """Images 64x48, category ids 3, 7 and 42; every third image without annotations."""
    entries, annotations = [], []
    for i in range(images):
        image(root / "images" / f"im{i}.jpg")
        entries.append({"id": 100 + i, "file_name": f"im{i}.jpg", "width": W, "height": H})
        if i % 3:
            annotations += [{"id": 10 * i + k, "image_id": 100 + i, "category_id": c, "bbox": [8, 8, 16, 12],
                             "iscrowd": 0} for k, c in enumerate((3, 7, 42))]
    categories = [{"id": 42, "name": "café"}, {"id": 3, "name": "car"}, {"id": 7, "name": "bus"}]
    path = root / "_annotations.coco.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations + extra, "categories": categories}))
    return path


def test_coco_crowd_regions_and_zero_width_boxes_are_left_out_and_named(tmp_path: Path) -> None:
    """Crowd regions are many objects, not one (COCO's evaluation, torchvision and Ultralytics leave them out); a
    zero-width box is nothing to learn. Ids with gaps keep their order; images without annotations are kept."""
    crowd = {"id": 1, "image_id": 101, "category_id": 3, "bbox": [0, 0, W, H], "iscrowd": 1}
    flat = {"id": 2, "image_id": 102, "category_id": 7, "bbox": [5, 5, 0, 10], "iscrowd": 0}
    path = coco(tmp_path / "coco", [crowd, flat])
    loaded = load_detection_dataset(str(tmp_path / "coco"), format_options={"shares": (1.0, 0.0, 0.0)})
    assert loaded.labels == ("car", "bus", "café")
    boxes = [*loaded.train.boxes, *loaded.val.boxes, *loaded.test.boxes]
    assert len(boxes) == 6 and sorted(len(b) for b in boxes) == [0, 0, 3, 3, 3, 3]
    assert loaded.report.dropped == (f"{path}: annotations[12] (id 1): iscrowd, left out (skip_crowd)",
                                     f"{path}: annotations[13] (id 2): the box [5, 5, 0, 10] has no area, left out")
    kept = load_detection_dataset(str(tmp_path / "coco"), format_options={"skip_crowd": False})
    assert sum(len(b) for s in (kept.train, kept.val, kept.test) for b in s.boxes) == 13


def test_coco_box_past_the_edge_says_which_tolerance_would_clip_it(tmp_path: Path) -> None:
    coco(tmp_path / "coco", [{"id": 3, "image_id": 101, "category_id": 7, "bbox": [60, 5, 10, 10]}])
    with pytest.raises(LabelError, match=r"annotations\[12\] \(id 3\).* by 6 pixels .*\?tolerance=6 would clip it"):
        load_detection_dataset(str(tmp_path / "coco"))
    assert load_detection_dataset(f"{tmp_path / 'coco'}?tolerance=6").labels == ("car", "bus", "café")


def test_a_phone_photo_labelled_unrotated_is_left_out_not_mislabelled(tmp_path: Path) -> None:
    """The JSON gives the sensor's 64x48 but the file carries EXIF orientation 6 (48x64 as shown, as hgen decodes
    it): its boxes would land in the wrong place, so the image is skipped and named. A proportional resize is fine."""
    path = coco(tmp_path / "coco", [], images=12)
    image(tmp_path / "coco" / "images" / "im4.jpg", exif_orientation=6)
    image(tmp_path / "coco" / "images" / "im5.jpg", size=(2 * W, 2 * H))
    image(tmp_path / "coco" / "images" / "im7.jpg", exif_orientation=6, size=(H, W))  # upright it is the JSON's
    loaded = load_detection_dataset(str(path))
    assert sum(map(len, (loaded.train, loaded.val, loaded.test))) == 11
    assert loaded.report.unreadable == (f"{tmp_path / 'coco' / 'images' / 'im4.jpg'}: the labels were drawn on 64 x "
                                        f"48, the image is 48 x 64 once its EXIF orientation is applied; its boxes "
                                        f"would be misplaced, so it is left out",)


def test_a_split_list_file_that_is_not_text_is_a_typed_error(tmp_path: Path) -> None:
    data = yolo(tmp_path / "set", GOOD)
    (data / "train.txt").write_bytes(b"\xff\xfe\x00images/train/t0.jpg")
    (data / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(DatasetFormatError, match=r"train\.txt: not a readable list of image paths"):
        load_detection_dataset(str(data))


def test_a_split_list_leaves_labels_of_unlisted_images_unreported(tmp_path: Path) -> None:
    """`train: train.txt` chooses some images of the folder: the labels of the others are not orphans (their images
    are there), only a label whose image is gone is named."""
    data = yolo(tmp_path / "set", GOOD)
    (data / "labels" / "train" / "renamed.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # its image is gone
    (data / "train.txt").write_text("images/train/t0.jpg\n./images/train/t1.jpg\n")
    (data / "data.yaml").write_text("train: train.txt\nval: images/val\nnames: [a, b]\n")
    loaded = load_detection_dataset(str(data))
    assert sum(map(len, (loaded.train, loaded.val, loaded.test))) == 4
    assert loaded.report.ignored == (f"{data / 'labels' / 'train' / 'renamed.txt'}: a label file without an image",)


def test_a_data_yaml_without_train_says_so(tmp_path: Path) -> None:
    """It used to be "not a data set hgen recognises": the key was missing, and nothing said which."""
    data = tmp_path / "site"
    data.mkdir()
    (data / "data.yaml").write_text("val: images/val\nnames: [a, b]\n")
    with pytest.raises(DatasetFormatError, match=r"data.yaml: no `train:` key"):
        load_detection_dataset(str(data))


def test_yolo_labels_never_found_are_an_error_and_missing_ones_a_warning(tmp_path: Path, capsys) -> None:
    """Labels in `label/` instead of `labels/`: every image was background, and the compile printed mAP nan. No box
    at all is an EmptyDatasetError naming where the label files were looked for (exit 2); some images without a
    label file train as background, counted in a warning."""
    from hgen.compiler.cli.main import main
    from hgen.compiler.errors import EmptyDatasetError

    data = yolo(tmp_path / "set", GOOD)
    (data / "labels").rename(data / "label")
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(EmptyDatasetError, match=rf"none of the 6 images has a label file \(looked for NAME\.txt in "
                                                rf"{data / 'labels' / 'train'}, {data / 'labels' / 'val'}"):
        load_detection_dataset(str(data))
    assert main(["data", "inspect", str(data)]) == 2
    (data / "label").rename(data / "labels")
    for name in ("t0", "t1"):
        (data / "labels" / "train" / f"{name}.txt").unlink()
    loaded = load_detection_dataset(str(data))
    assert loaded.report.warnings == (f"2 of 6 images have no label file (looked in {data / 'labels' / 'train'}) "
                                      "and train as background (no objects), e.g. t0.jpg",)
    capsys.readouterr()
    assert main(["data", "inspect", str(data)]) == 0
    assert "warning   2 of 6 images have no label file" in capsys.readouterr().out


def test_a_data_yaml_that_does_not_parse_names_its_line_and_column(tmp_path: Path) -> None:
    """A tab in data.yaml made detection pass the set to the folder format ("class 'labels' has no images")."""
    from hgen.compiler.data.formats import detect_format

    data = yolo(tmp_path / "set", GOOD)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n\tnc: 2\n")
    assert detect_format(data).name == "yolo" and detect_format(data / "data.yaml").name == "yolo"
    with pytest.raises(DatasetFormatError, match=r"data\.yaml:4:1: not valid YAML: .*\(YAML indents with spaces, "
                                                 r"not tabs\)"):
        load_detection_dataset(str(data))


def test_a_data_yaml_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """`read_text()` used the locale's encoding: under an ASCII locale a UTF-8 `café` made the set "not YOLO"."""
    import os
    import subprocess
    import sys

    data = yolo(tmp_path / "set", GOOD)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [person, café]\n",
                                    encoding="utf-8-sig")
    code = ("import sys; from pathlib import Path; from hgen.compiler.data.formats import scan\n"
            "assert sys.flags.utf8_mode == 0, 'UTF-8 mode on'\n"
            "print(scan(Path(sys.argv[1])).labels == ('person', 'caf\\u00e9'))")  # ASCII: the locale's
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.stdout.strip() == "True", done.stderr


def test_a_roboflow_coco_export_root_takes_its_splits_from_the_folders(tmp_path: Path) -> None:
    """train/, valid/ and test/, each with `_annotations.coco.json` beside its images: the folder format used to
    claim it ("images lie directly in the folder")."""
    root = tmp_path / "export"
    for split, count in (("train", 4), ("valid", 2), ("test", 2)):
        coco(root / split, [], images=count)
    loaded = load_detection_dataset(str(root))
    assert loaded.labels == ("car", "bus", "café")
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (4, 2, 2)
    (root / "valid" / "other.json").write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(DatasetFormatError, match=r"valid: 2 COCO JSON files .*a split folder holds one"):
        load_detection_dataset(str(root))


def test_roboflows_project_category_that_only_groups_the_others_is_left_out_and_said(tmp_path: Path) -> None:
    """Roboflow lists the project as category 0, the supercategory of the real ones, with no box: it became a class
    nothing teaches. A grouping category that has boxes, and COCO's own-named supercategories, stay classes."""
    path = coco(tmp_path / "rf", [])
    data = json.loads(path.read_text())
    data["categories"] = [{"id": 0, "name": "vehicles-x1", "supercategory": "none"},
                          *({**c, "supercategory": "vehicles-x1"} for c in data["categories"])]
    path.write_text(json.dumps(data))
    loaded = load_detection_dataset(str(tmp_path / "rf"))
    assert loaded.labels == ("car", "bus", "café")
    assert any("category 'vehicles-x1' (id 0) left out" in w for w in loaded.report.warnings)
    boxes = [*loaded.train.boxes, *loaded.val.boxes, *loaded.test.boxes]
    assert sum(len(b) for b in boxes) == 12
    data["annotations"].append({"id": 999, "image_id": 100, "category_id": 0, "bbox": [1, 1, 5, 5], "iscrowd": 0})
    path.write_text(json.dumps(data))
    assert load_detection_dataset(str(tmp_path / "rf")).labels == ("vehicles-x1", "car", "bus", "café")
    data["annotations"].pop()
    data["categories"] = [{**c, "supercategory": c["name"]} for c in data["categories"]]
    path.write_text(json.dumps(data))
    assert load_detection_dataset(str(tmp_path / "rf")).labels == ("vehicles-x1", "car", "bus", "café")


def test_a_split_without_boxes_is_refused_before_training_and_said(tmp_path: Path) -> None:
    """Ultralytics users keep `test:` as unlabelled images for prediction: mAP of no boxes is nan, which passed
    every accuracy demand (`--accuracy 0.9`: "violations: none", exit 0) and wrote NaN into summary.json."""
    from hgen.compiler.data import require_boxes
    from hgen.compiler.errors import EmptyDatasetError

    data = yolo(tmp_path / "set", GOOD)
    for i in range(2):  # a test folder of images without label files
        image(data / "images" / "test" / f"test{i}.jpg")
    (data / "data.yaml").write_text("train: images/train\nval: images/val\ntest: images/test\nnames: [a, b]\n")
    loaded = load_detection_dataset(str(data))
    assert len(loaded.test) == 2 and not any(len(b) for b in loaded.test.boxes)
    with pytest.raises(EmptyDatasetError, match=r"the test split\(s\) hold no boxes .* leave the split out"):
        require_boxes(loaded)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    require_boxes(load_detection_dataset(str(data)))  # a test split carved from train holds boxes


def test_an_accuracy_not_measured_violates_the_demand() -> None:
    from hgen.compiler.search.objective import Demands, Measured, violations

    measured = Measured(accuracy=float("nan"), latency_ms=1.0, storage_mb=0.1, energy_mj=1.0, labour=0.01)
    demands = Demands(accuracy=0.9, latency_ms=100.0, storage_mb=1.0, energy_mj=10.0, labour=0.1)
    assert violations(measured, demands) == ["accuracy nan < 0.9"]


def test_inspect_warns_of_a_class_with_boxes_in_val_or_test_but_none_in_train(tmp_path: Path) -> None:
    from hgen.compiler.data.inspect import inspect_dataset

    only_val = {**{f"t{i}": "0 0.5 0.5 0.2 0.2\n" for i in range(4)}, "val0": "1 0.5 0.5 0.4 0.4\n"}
    data = yolo(tmp_path / "set", only_val)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    found = inspect_dataset(str(data)).warnings()
    assert any(line.startswith("no train boxes of 'b': the model never learns it") for line in found), found


def test_a_data_yaml_with_nc_and_no_names_names_the_classes_as_ultralytics_does(tmp_path: Path) -> None:
    """It was "not a data set hgen recognises"."""
    data = yolo(tmp_path / "set", GOOD)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 2\n")
    assert load_detection_dataset(str(data)).labels == ("class_0", "class_1")


def test_a_detection_set_larger_than_the_free_memory_is_refused_before_it_is_made_float32(tmp_path: Path) -> None:
    """A 10,000-image export at 640 needs tens of GB as float32: the compile swapped or was killed."""
    from hgen.compiler.cli.main import exit_code_for
    from hgen.compiler.data.detection import check_fits_in_memory
    from hgen.compiler.errors import DatasetTooLargeError

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  1024000 kB\n")  # 1,000 MB free
    splits = [np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (1500, 256, 256, 3), (0, 0, 0, 0))]  # no RAM
    with pytest.raises(DatasetTooLargeError, match=r"1500 images at 256x256x3 need 1,125 MB as float32") as refused:
        check_fits_in_memory(splits, "site/data.yaml", meminfo)
    assert exit_code_for(refused.value) == 2
    check_fits_in_memory([splits[0][:500]], "site/data.yaml", meminfo)  # 375 MB: fits
    check_fits_in_memory(splits, "site/data.yaml", tmp_path / "absent")  # unknown free memory: not refused


def test_a_carved_split_without_boxes_gets_advice_that_can_help(tmp_path: Path) -> None:
    """A test split carved from a sparse train (most images background) told the user to leave the split out of
    data.yaml to carve it: what had already happened."""
    import dataclasses

    from hgen.compiler.data import require_boxes
    from hgen.compiler.data.detection import DetectionSplit
    from hgen.compiler.errors import EmptyDatasetError

    data = yolo(tmp_path / "set", GOOD)
    (data / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    loaded = load_detection_dataset(str(data))
    assert loaded.report.carved == ("test",)
    background = dataclasses.replace(loaded, test=DetectionSplit(loaded.test.x, (np.zeros((0, 5)),) * len(loaded.test)))
    with pytest.raises(EmptyDatasetError, match="give it its own labelled split in data.yaml, or label more of train"):
        require_boxes(background)
