"""`idx`: a folder of MNIST-style IDX files (t10k-images-idx3-ubyte[.gz] and labels, optionally train-*).

The built-in MNIST family reads the same files by name (`mnist`, `fashion-mnist`); this format reads them from any
folder, through the same reader as image files, at 28x28x1 unless another size is asked for. Class names are the
label values, or `classes.txt` in the folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from hgen.compiler.data.formats import FORMATS, Catalog, DataFormat, read_classes_file
from hgen.compiler.data.sources import IDX_FILES, _find_file, read_idx_folder
from hgen.compiler.errors import DatasetFormatError
from hgen.runtime.config import StrictModel


class IdxConfig(StrictModel):
    classes_file: str = Field("classes.txt", title="Class names file in the folder; optional")


class IdxFormat(DataFormat):
    """a folder of MNIST-style IDX files (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, train-*)"""

    name = "idx"
    priority = 40
    Config = IdxConfig

    def detect(self, path: Path) -> bool:
        return path.is_dir() and _find_file(path, IDX_FILES["test"][0]) is not None

    def scan(self, path: Path, config: IdxConfig) -> Catalog:
        raw = read_idx_folder(path) if path.is_dir() else None
        if raw is None:
            raise DatasetFormatError(f"{path}: no t10k-images-idx3-ubyte / t10k-labels-idx1-ubyte files")
        top = max(int(y.max(initial=0)) for _, y in raw.splits.values())
        labels = read_classes_file(path / config.classes_file) or tuple(str(i) for i in range(top + 1))
        if top >= len(labels):
            raise DatasetFormatError(f"{path}: label {top} but {config.classes_file} names {len(labels)} classes")
        # The official training set gives train and validation; a test-only folder is split by `shares` later.
        arrays = {("train" if name == "train" else "test"): (x, y.astype(np.int64)) for name, (x, y) in
                  raw.splits.items()}
        return Catalog(self.name, self.task, labels, (), str(path), default_size=(28, 28), arrays=arrays,
                       shares=(0.6, 0.1, 0.3))


FORMATS.add("idx", IdxFormat())
