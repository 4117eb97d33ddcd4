"""The colour folder generator tests and benchmarks use: files a user's folder would hold, read back by `folder`."""

import numpy as np

from hgen.compiler.data import load_dataset
from hgen.compiler.data.synthetic import write_colour_folder


def test_generated_folder_reads_back_as_colour_data_with_mixed_files(tmp_path):
    rng = np.random.default_rng(0)
    items = rng.uniform(0, 1, (40, 8, 8))
    labels = np.arange(40) % 4
    root = write_colour_folder(tmp_path / "cams", items, labels, ["a", "b", "c", "d"], size=32, mixed=True, seed=1)
    suffixes = {p.suffix for p in root.rglob("*.*")}
    assert suffixes == {".jpg", ".png"} and sorted(p.name for p in root.iterdir()) == ["a", "b", "c", "d"]
    data = load_dataset(str(root), image={"size": 24})
    assert data.labels == ("a", "b", "c", "d") and data.input_shape == (24, 24, 3)
    assert len(data.train) + len(data.val) + len(data.test) == 40
    assert np.asarray(data.train.x).std(axis=(0, 1, 2)).min() > 0.05  # colour everywhere, not grey copies


def test_class_hues_tint_each_class_with_its_own_hue(tmp_path):
    """`class_hues=True` (the int8 benchmark's learnable data): the object's hue is the class's, +-12 degrees."""
    import cv2

    items = np.ones((20, 8, 8))  # a solid square object: every mask pixel is the tint
    labels = np.arange(20) % 4
    root = write_colour_folder(tmp_path / "hues", items, labels, ["a", "b", "c", "d"], size=32, class_hues=True)
    for k, name in enumerate("abcd"):
        for path in sorted((root / name).glob("*.jpg")):
            hsv = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2HSV_FULL)  # hue 0..255 for 0..360 degrees
            hue = np.median(hsv[..., 0][hsv[..., 1] > 200]) * 360 / 256
            assert min(abs(hue - 90 * k), 360 - abs(hue - 90 * k)) < 20, (path.name, hue)
