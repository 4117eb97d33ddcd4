"""Where dataset files come from, in a fixed order: explicit path, $HGEN_DATA, Debian's package, the Keras cache.

A network download happens only when the caller asks for it (`allow_download=True`); tests and CI never do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hgen.compiler.data.idx import read_idx
from hgen.compiler.errors import DatasetError, DatasetNotFoundError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    """An IDX dataset (MNIST-like): its folder name and the hints to install it."""

    name: str
    debian_dir: str | None
    keras_loader: str
    install_hint: str


@dataclass(frozen=True)
class RawData:
    """Images as uint8 [n, h, w] and labels, per official split ('test' always; 'train' when available)."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    origin: str


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def read_idx_folder(folder: Path) -> RawData | None:
    """Read whatever official splits the folder holds; None when it holds no test split."""
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (image_stem, label_stem) in IDX_FILES.items():
        images, labels = _find_file(folder, image_stem), _find_file(folder, label_stem)
        if images is None or labels is None:
            continue
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DatasetError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match")
        splits[split] = (x, y.astype(np.int64))
    return RawData(splits, str(folder)) if "test" in splits else None


def candidate_folders(source: IdxSource, explicit: Path | None) -> list[Path]:
    """The folders to try, in order."""
    folders: list[Path] = []
    if explicit is not None:
        folders.extend([explicit, explicit / source.name])
    env = os.environ.get("HGEN_DATA")
    if env:
        folders.append(Path(env) / source.name)
    if source.debian_dir:
        folders.append(Path(source.debian_dir))
    folders.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / source.name)
    return folders


def _keras_npz(source: IdxSource) -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / f"{source.name}.npz"


def _read_npz(path: Path) -> RawData:
    with np.load(path) as data:
        return RawData({"train": (data["x_train"], data["y_train"].astype(np.int64)),
                        "test": (data["x_test"], data["y_test"].astype(np.int64))}, str(path))


def locate(source: IdxSource, explicit: Path | None = None, allow_download: bool = False) -> RawData:
    """Find and read the dataset, or raise DatasetNotFoundError naming every place tried and the fix."""
    tried: list[str] = []
    for folder in candidate_folders(source, explicit):
        tried.append(str(folder))
        raw = read_idx_folder(folder) if folder.is_dir() else None
        if raw is not None:
            return raw
    npz = _keras_npz(source)
    tried.append(str(npz))
    if npz.is_file():
        return _read_npz(npz)
    if allow_download:
        return _download(source)
    raise DatasetNotFoundError(_not_found_message(source, tried))


def _not_found_message(source: IdxSource, tried: Sequence[str]) -> str:
    """Names every fix as it is typed: a download is never implicit, so the message says how to ask for one."""
    return (f"dataset '{source.name}' not found; tried: {', '.join(tried)}. Fix: {source.install_hint}, or set "
            f"HGEN_DATA to a folder holding '{source.name}/' with the IDX files, or allow a download explicitly: "
            f"`hgen data {source.name} --download` (in Python `allow_download=True`) fetches it once into the "
            f"Keras cache, where later runs find it.")


def _download(source: IdxSource) -> RawData:
    """Only on explicit request: Keras fetches the official files into its cache."""
    try:
        import keras
    except ImportError:
        raise DatasetNotFoundError("downloading needs Keras: pip install 'hgen[compiler]'") from None
    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, source.keras_loader).load_data()
    return RawData({"train": (x_train, y_train.astype(np.int64)), "test": (x_test, y_test.astype(np.int64))},
                   f"keras.datasets.{source.keras_loader}")
