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
