"""The built-in data sets are registered backends: a file registering a `Builtin` is all a new one takes (loading,
listing in errors, its detection set and demo preset), and `auto` falls back from FashionMNIST to the digits."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.data import dataset_names, is_builtin, load_dataset
from hgen.compiler.data.builtins import BUILTINS, BuiltinData, DemoDefaults, builtin_names, get_builtin
from hgen.compiler.data.builtins.auto import Auto
from hgen.compiler.data.detection import detection_names, is_detection_spec, load_detection_dataset
from hgen.compiler.data.sources import IdxSource, RawData
from hgen.compiler.demo.presets import OWN_DATA, preset_for
from hgen.compiler.errors import DatasetNotFoundError, UnknownNameError


class Tiny(BuiltinData):
    """A synthetic built-in that only this test registers: a bright square (class 0) or a bright bar (class 1)."""

    name = "tiny"
    title = "the tiny test shapes"
    labels = ("square", "bar")
    detection = "tiny-det"
    demo = DemoDefaults(accuracy=0.7, base_epochs=1, final_epochs=1)

    def read(self, root: Path | None, allow_download: bool) -> RawData:
        images = np.zeros((100, 28, 28), np.uint8)
        images[0::2, 8:20, 8:20] = 220
        images[1::2, 4:24, 12:16] = 220
        return RawData({"test": (images, np.arange(100, dtype=np.int64) % 2)}, "the tiny test shapes")


def _hide_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every place FashionMNIST is looked for (HGEN_DATA, Debian's folder, the Keras cache) at empty folders."""
    monkeypatch.setenv("HGEN_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    hidden = IdxSource("fashion-mnist", str(tmp_path / "debian"), "fashion_mnist", "apt-get install it")
    monkeypatch.setattr(get_builtin("fashion-mnist"), "source", hidden)


def _write_idx(folder: Path, n: int) -> None:
    """A test split of `n` random 28x28 images in uncompressed IDX files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, array in (("t10k-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                        ("t10k-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
        (folder / stem).write_bytes(header + array.tobytes())


def test_a_builtin_registered_in_a_file_is_loaded_listed_and_described(monkeypatch: pytest.MonkeyPatch) -> None:
    BUILTINS.names()  # discover the shipped built-ins before adding one for this test only
    with monkeypatch.context() as patch:
        patch.setitem(BUILTINS._items, "tiny", Tiny())
        data = load_dataset("tiny:noise", seed=3)
        assert data.name == "tiny:noise?variance=0.2" and data.labels == ("square", "bar") and data.note == ""
        assert (len(data.train), len(data.val), len(data.test)) == (60, 10, 30)  # test-only: split 60/10/30
        assert data.input_shape == (28, 28, 1) and data.origin == "the tiny test shapes"
        assert "tiny" in builtin_names() and "tiny" in dataset_names() and is_builtin("tiny")
        with pytest.raises(UnknownNameError, match=r"valid choices: mnist, fashion-mnist, digits, auto, tiny"):
            load_dataset("nope")
        # what it declares replaces what callers used to look up by name: its detection set and the demo's preset
        assert "tiny-det" in detection_names() and is_detection_spec("tiny-det:lowres")
        boxes = load_detection_dataset("tiny-det", limit=20)
        assert boxes.labels == ("square", "bar") and len(boxes.test) == 20
        assert {int(c) for b in boxes.train.boxes for c in b[:, 4]} <= {0, 1}
        assert preset_for("tiny").demands.accuracy == 0.7 and preset_for("tiny").base_epochs == 1
    # removed from the registry, it is gone everywhere: no copy of the names outlives it
    assert "tiny" not in builtin_names() and "tiny" not in dataset_names() and "tiny-det" not in detection_names()
    assert preset_for("tiny") is OWN_DATA
    with pytest.raises(UnknownNameError, match="valid choices: mnist, fashion-mnist, digits, auto \\("):
        load_dataset("tiny")


def test_auto_falls_back_to_the_digits_when_fashion_mnist_is_not_found(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_fashion_mnist(tmp_path, monkeypatch)
    with pytest.raises(DatasetNotFoundError):
        load_dataset("fashion-mnist")
    data = load_dataset("auto:lowres", limit=20)
    assert data.name == "digits:lowres?factor=4" and data.labels == tuple("0123456789")
    assert data.note == "FashionMNIST not installed: using the bundled scikit-learn digits"
    assert data.origin == "sklearn.datasets.load_digits (bundled)"
    assert load_dataset("digits", limit=20).note == ""  # asked for by name, nothing fell back


def test_auto_takes_fashion_mnist_when_it_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_fashion_mnist(tmp_path, monkeypatch)
    _write_idx(tmp_path / "nothing" / "fashion-mnist", n=50)
    data = load_dataset("auto", limit=10)
    assert data.spec.base == "fashion-mnist" and data.labels[0] == "T-shirt/top" and data.note == ""
    assert data.origin == str(tmp_path / "nothing" / "fashion-mnist")


def test_auto_fails_when_its_last_preference_is_missing_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback swallows only a missing preference that has a successor; the last one's error names its fix."""
    _hide_fashion_mnist(tmp_path, monkeypatch)
    monkeypatch.setattr(Auto, "prefers", ("fashion-mnist", "mnist"))
    with pytest.raises(DatasetNotFoundError, match="put the MNIST IDX files in"):
        load_dataset("auto")


def test_hgen_data_auto_says_when_it_fell_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from hgen.compiler.cli.main import main

    _hide_fashion_mnist(tmp_path, monkeypatch)
    assert main(["data", "auto"]) == 0
    origin = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("origin"))
    assert "(FashionMNIST not installed: using" in origin
