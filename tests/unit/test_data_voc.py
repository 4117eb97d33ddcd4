"""The `voc` data format (Pascal VOC XML: VOC's own layout, LabelImg's and Roboflow's), read as a user's folder would
be: generated canvases (digits on textured colour backgrounds, `hgen.compiler.data.synthetic.write_voc_set`) come
back with their boxes and splits through `load_detection_dataset`; bad XML costs its image, not the set, and says
where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from hgen.compiler.data import Split
from hgen.compiler.data.detection import DetectionSplit, compose, is_detection_spec, load_detection_dataset
from hgen.compiler.data.formats import detect_format, get_format, scan
from hgen.compiler.data.synthetic import voc_xml, write_voc_set
from hgen.compiler.errors import DatasetSpecError, EmptyDatasetError, LabelError

CLASSES = ("zero", "one", "two", "three")


@pytest.fixture(scope="module")
def scenes() -> dict[str, DetectionSplit]:
    digits = load_digits()
    keep = digits.target < len(CLASSES)
    import cv2

    x = np.stack([cv2.resize(im / 16.0, (28, 28)) for im in digits.images[keep]])[..., None].astype(np.float32)
    source = Split(np.clip(x, 0, 1), digits.target[keep])
    return {name: compose(source, n, np.random.default_rng(i)) for i, (name, n) in
            enumerate((("train", 12), ("val", 4), ("test", 5)))}


def boxes_by_stem(root: Path) -> dict[str, np.ndarray]:
    return {r.path.stem: r.boxes for r in scan(root).records}


def test_the_voc_layout_comes_back_with_its_boxes_and_splits(scenes: dict[str, DetectionSplit],
                                                             tmp_path: Path) -> None:
    root = write_voc_set(tmp_path / "VOC2007", scenes, CLASSES, size=64, mixed=True)
    assert detect_format(root).name == "voc" and is_detection_spec(str(root))
    catalog = scan(root)
    assert catalog.labels == tuple(sorted(CLASSES))  # no classes.txt: the names found, sorted
    by_stem = {r.path.stem: r for r in catalog.records}
    assert len(by_stem) == 21 and {r.split for r in catalog.records} == {"train", "val", "test"}
    order = {name: sorted(CLASSES).index(name) for name in CLASSES}
    for split, found in scenes.items():
        for i, truth in enumerate(found.boxes):
            record = by_stem[f"{split}_{i:05d}"]
            assert record.split == split
            expected = np.array([[*b[:4], order[CLASSES[int(b[4])]]] for b in truth]).reshape(-1, 5)
            np.testing.assert_allclose(record.boxes, expected, atol=0.01 / 64)  # 1-based pixels, written to 0.01
    data = load_detection_dataset(f"{root}?size=64", seed=0)
    assert (len(data.train.x), len(data.val.x), len(data.test.x)) == (12, 4, 5)
    assert data.train.x.shape[1:] == (64, 64, 3) and data.labels == tuple(sorted(CLASSES))


def test_labelimgs_flat_folder_with_classes_txt_and_a_seeded_split(scenes: dict[str, DetectionSplit],
                                                                  tmp_path: Path) -> None:
    root = write_voc_set(tmp_path / "labelled", scenes, CLASSES, size=48, flat=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "unlabelled.jpg").write_bytes((root / "train_00000.jpg").read_bytes())  # LabelImg not saved yet
    catalog = scan(root)
    assert catalog.labels == CLASSES and all(r.split is None for r in catalog.records)
    assert len(catalog.records) == 21
    assert any("1 image(s) have no XML file" in w and "unlabelled.jpg" in w for w in catalog.warnings)
    data = load_detection_dataset(str(root), seed=0)
    assert len(data.train.x) + len(data.val.x) + len(data.test.x) == 21


def test_roboflow_split_folders(scenes: dict[str, DetectionSplit], tmp_path: Path) -> None:
    root = tmp_path / "export"
    for folder, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        write_voc_set(root / folder, {split: scenes[split]}, CLASSES, size=32, flat=True)
    catalog = scan(root)
    assert {r.split for r in catalog.records} == {"train", "val", "test"} and len(catalog.records) == 21


def test_trainval_is_train_and_unlisted_images_are_left_out(scenes: dict[str, DetectionSplit],
                                                            tmp_path: Path) -> None:
    root = write_voc_set(tmp_path / "VOC", scenes, CLASSES, size=32)
    main = root / "ImageSets" / "Main"
    train = (main / "train.txt").read_text()
    (main / "train.txt").unlink()
    (main / "val.txt").unlink()
    (main / "trainval.txt").write_text(train)  # VOC2007's test release: trainval + test
    (main / "zero_train.txt").write_text("train_00000  1\n")  # a per-class list, not a split
    catalog = scan(root)
    assert {r.split for r in catalog.records} == {"train", "test"} and len(catalog.records) == 17
    assert any("4 annotated image(s) are in no ImageSets/Main list" in w for w in catalog.warnings)


def test_bad_xml_costs_its_image_and_names_the_object(scenes: dict[str, DetectionSplit], tmp_path: Path) -> None:
    root = write_voc_set(tmp_path / "VOC", {"train": scenes["train"]}, CLASSES, size=64)
    ann = root / "Annotations"
    (ann / "train_00000.xml").write_text("<annotation><filename>train_00000.jpg</filename>")  # cut short
    for stem, old, new in (("train_00001", "<xmax>", "<xmax>9"),  # 9xx: past the 64 px edge
                           ("train_00002", "<ymin>", "<ymin>abc"),
                           ("train_00003", "<name>", "<name>seven")):  # a class not listed...
        text = (ann / f"{stem}.xml").read_text()
        (ann / f"{stem}.xml").write_text(text.replace(old, new, 1))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")  # ... in classes.txt
    problems = {r.path.stem: r.problem for r in scan(root).records if getattr(r, "problem", None)}
    assert set(problems) == {"train_00000", "train_00001", "train_00002", "train_00003"}
    assert "not readable VOC XML" in problems["train_00000"]
    assert "train_00001.xml: object 1" in problems["train_00001"] and "reaches outside" in problems["train_00001"]
    assert "is not a number" in problems["train_00002"]
    assert "is not one of the classes" in problems["train_00003"]
    with pytest.raises(LabelError, match="train_00000.xml"):
        load_detection_dataset(f"{root}?size=64&on_unreadable=error")


def test_size_missing_an_empty_box_difficult_and_a_windows_path(tmp_path: Path) -> None:
    """<size> 0 (some tools): the image's own size; a box without area is dropped and said; <difficult> kept unless
    skip_difficult; <filename> found by its name whatever folder the XML's machine had."""
    import cv2

    root = tmp_path / "site"
    root.mkdir()
    cv2.imwrite(str(root / "cam1.png"), np.zeros((40, 80, 3), np.uint8))  # 80 wide, 40 high
    xml = ("<annotation><filename>D:\\photos\\cam1.png</filename><size><width>0</width><height>0</height></size>"
           "<object><name>car</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>40</xmax>"
           "<ymax>20</ymax></bndbox></object><object><name>car</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
           "<xmax>4</xmax><ymax>9</ymax></bndbox></object></annotation>")
    (root / "frame.xml").write_text(xml)
    catalog = scan(root)
    (record,) = catalog.records
    np.testing.assert_allclose(record.boxes, [[0.0, 0.0, 0.5, 0.5, 0.0]])
    assert record.size == (80.0, 40.0) and len(catalog.dropped) == 1 and "has no area" in catalog.dropped[0]
    skipped = scan(root, options={"skip_difficult": True})
    assert skipped.records[0].boxes.shape == (0, 5) and any("difficult" in d for d in skipped.dropped)


def test_missing_images_no_objects_and_unknown_options_are_refused(tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "voc"
    root.mkdir()
    (root / "a.xml").write_text(voc_xml("a.jpg", 32, [(0.1, 0.1, 0.5, 0.5, 0)], ["cat"]))
    with pytest.raises(EmptyDatasetError, match=r"no image found on disk .*a\.xml: its image 'a\.jpg' is not in"):
        scan(root)
    (root / "a.xml").write_text("<annotation><filename>a.jpg</filename></annotation>")
    cv2.imwrite(str(root / "a.jpg"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(EmptyDatasetError, match="no <object>"):
        scan(root)
    with pytest.raises(DatasetSpecError, match="colour"):
        scan(root, options={"colour": 1})


def test_what_a_review_met_in_users_folders(tmp_path: Path) -> None:
    """One folder holding them all: an XML in GBK (Python's expat cannot decode it), no <size> over a corrupt image,
    an XML whose image was deleted, CVAT's annotations.xml beside them, '[' in a name, <filename> in a sub-folder or
    without its extension. Each costs its own image or is passed over and named; the others load."""
    import cv2

    root = tmp_path / "labelled"
    (root / "day2").mkdir(parents=True)
    box = [(0.25, 0.25, 0.75, 0.75, 0)]
    for name in ("photo[1].jpg", "day2/b.jpg", "c.jpg", "gbk.jpg"):
        cv2.imwrite(str(root / name), np.full((40, 40, 3), 90, np.uint8))
    (root / "photo[1].xml").write_text(voc_xml("elsewhere.jpg", 40, box, ["car"]))  # found by the XML's stem
    (root / "b.xml").write_text(voc_xml("day2/b.jpg", 40, box, ["car"]))
    (root / "c.xml").write_text(voc_xml("c", 40, box, ["car"]))  # no extension
    (root / "gbk.xml").write_bytes('<?xml version="1.0" encoding="GBK"?>'.encode() + voc_xml("gbk.jpg", 40, box,
                                                                                         ["car"]).encode())
    (root / "bad.jpg").write_bytes(b"not an image")
    (root / "bad.xml").write_text(voc_xml("bad.jpg", 40, box, ["car"]).replace("<width>40", "<width>0"))
    (root / "gone.xml").write_text(voc_xml("gone.jpg", 40, box, ["car"]))
    (root / "annotations.xml").write_text("<annotations><version>1.1</version></annotations>")  # CVAT's own
    catalog = scan(root)
    good = {r.path.name for r in catalog.records if getattr(r, "problem", None) is None}
    bad = {r.path.name: r.problem for r in catalog.records if getattr(r, "problem", None)}
    assert good == {"photo[1].jpg", "b.jpg", "c.jpg"}
    assert set(bad) == {"gbk.jpg", "bad.jpg"} and "not readable VOC XML" in bad["gbk.jpg"]
    assert "cannot be read for one" in bad["bad.jpg"]
    assert any("gone.xml: its image 'gone.jpg'" in i for i in catalog.ignored)
    assert any("annotations.xml: not a VOC annotation" in i for i in catalog.ignored)


def test_kaggles_lowercase_layout_and_a_class_folder_named_annotations(scenes: dict[str, DetectionSplit],
                                                                      tmp_path: Path) -> None:
    """annotations/ + images/ is a VOC set; a classification folder with a class named Annotations (no XML in it),
    or a VOC tree whose Annotations/ is still empty, is not (detection crashed on both)."""
    root = write_voc_set(tmp_path / "kaggle", {"train": scenes["train"]}, CLASSES, size=32)
    (root / "Annotations").rename(root / "annotations")
    (root / "JPEGImages").rename(root / "images")
    (root / "ImageSets" / "Main" / "train.txt").unlink()
    assert detect_format(root).name == "voc" and len(scan(root).records) == 12
    import cv2

    classes = tmp_path / "classes"
    for name in ("Annotations", "cats"):
        (classes / name).mkdir(parents=True)
        cv2.imwrite(str(classes / name / "1.png"), np.zeros((8, 8, 3), np.uint8))
    assert detect_format(classes).name == "folder"
    (tmp_path / "empty" / "Annotations").mkdir(parents=True)
    assert not get_format("voc").detect(tmp_path / "empty")


def test_other_machines_paths_and_names_the_system_cannot_look_up(tmp_path: Path) -> None:
    """<filename> as another machine's absolute path (C:/..., /home/...) is looked up by its name alone, never outside
    the folder; one over 255 bytes is not an OSError traceback; a split list that is not UTF-8 is a typed error."""
    import cv2

    from hgen.compiler.errors import DatasetFormatError

    root = tmp_path / "voc"
    root.mkdir()
    box = [(0.25, 0.25, 0.75, 0.75, 0)]
    cv2.imwrite(str(root / "a.jpg"), np.zeros((40, 40, 3), np.uint8))
    (root / "a.xml").write_text(voc_xml("C:/Users/me/labels/a.jpg", 40, box, ["car"]))
    (root / "long.xml").write_text(voc_xml("x" * 300 + ".jpg", 40, box, ["car"]))
    catalog = scan(root)
    assert [r.path.name for r in catalog.records] == ["a.jpg"]
    assert any("long.xml: its image" in i for i in catalog.ignored)
    voc = write_voc_set(tmp_path / "VOC", {}, CLASSES)
    (voc / "Annotations").mkdir()
    (voc / "JPEGImages").mkdir()
    cv2.imwrite(str(voc / "JPEGImages" / "a.jpg"), np.zeros((40, 40, 3), np.uint8))
    (voc / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", 40, box, ["car"]))
    (voc / "ImageSets" / "Main" / "train.txt").write_bytes("a\n\xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="train.txt: cannot read the split list"):
        scan(voc)
