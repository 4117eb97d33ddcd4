import gzip
import struct

import numpy as np
import pytest

from hgen.compiler.data import load_dataset, parse_spec
from hgen.compiler.data.builtins import builtin_names, get_builtin
from hgen.compiler.data.idx import read_idx
from hgen.compiler.data.sources import IdxSource
from hgen.compiler.errors import DatasetError, DatasetNotFoundError, DatasetSpecError, UnknownNameError


def write_idx(path, array, gz=True):
    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.tobytes()
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_dataset(folder, n=200, with_train=False):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"t10k": n} | ({"train": 2 * n} if with_train else {})
    for prefix, count in splits.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(count) % 10).astype(np.uint8))


def test_idx_round_trip_and_truncation(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", array, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    (tmp_path / "b.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "b.idx")
    (tmp_path / "c.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "c.idx")


def test_test_only_dataset_is_split_60_10_30_by_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("HGEN_DATA", str(tmp_path))
    make_idx_dataset(tmp_path / "mnist", n=200)
    a, b, c = (load_dataset("mnist", seed=s) for s in (0, 0, 1))
    assert (len(a.train), len(a.val), len(a.test)) == (120, 20, 60)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.y, c.test.y)
    assert a.train.x.dtype == np.float32 and a.train.x.shape[1:] == (28, 28, 1)
    assert 0.0 <= a.train.x.min() and a.train.x.max() <= 1.0


def test_official_training_set_gives_train_and_validation(tmp_path, monkeypatch):
    monkeypatch.setattr("hgen.compiler.data.VALIDATION_SIZE", 50)
    make_idx_dataset(tmp_path / "fashion-mnist", n=100, with_train=True)
    data = load_dataset("fashion-mnist", root=tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (150, 50, 100)
    assert data.origin == str(tmp_path / "fashion-mnist")
    assert data.labels[0] == "T-shirt/top"


def test_explicit_root_wins_over_hgen_data(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "env" / "mnist", n=100)
    make_idx_dataset(tmp_path / "explicit", n=200)
    monkeypatch.setenv("HGEN_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist", root=tmp_path / "explicit").test) == 60
    assert len(load_dataset("mnist").test) == 30


def test_not_found_names_every_path_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HGEN_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    debian = IdxSource("fashion-mnist", str(tmp_path / "debian"), "fashion_mnist",
                       "apt-get install dataset-fashion-mnist")
    monkeypatch.setattr(get_builtin("fashion-mnist"), "source", debian)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist:lowres")
    text = str(info.value)
    for path in (tmp_path / "nothing" / "fashion-mnist", tmp_path / "debian", tmp_path / "keras"):
        assert str(path) in text
    assert "apt-get install dataset-fashion-mnist" in text
    # `auto` falls back to the bundled digits instead of failing
    assert load_dataset("auto:lowres").spec.base == "digits"


@pytest.mark.parametrize("spec, error", [
    ("nope", UnknownNameError), ("mnist:blurry", UnknownNameError), ("D5?factor=1", DatasetSpecError),
    ("D2?variance=0.2&colour=red", DatasetSpecError), ("digits?=", DatasetSpecError),
])
def test_bad_specs_are_typed_errors(spec, error):
    with pytest.raises(error):
        load_dataset(spec)


def test_variants_are_deterministic_and_do_what_they_say():
    clean = load_dataset("digits", limit=300)
    noisy_a = load_dataset("digits:noise", limit=300)
    noisy_b = load_dataset("digits:noise", limit=300)
    noisy_other = load_dataset("digits:noise", limit=300, seed=1)
    np.testing.assert_array_equal(noisy_a.test.x, noisy_b.test.x)
    assert not np.array_equal(noisy_a.test.x, noisy_other.test.x)
    residual = noisy_a.test.x - clean.test.x
    middle = (clean.test.x > 0.4) & (clean.test.x < 0.6)  # far from the clip bounds
    assert 0.1 < residual[middle].var() < 0.2  # variance 0.2 before clipping, a bit less after


def test_lowres_removes_detail_finer_than_the_factor():
    from hgen.compiler.data.challenges import VARIANTS, LowResParams

    checker = (np.indices((28, 28)).sum(axis=0) % 2).astype(np.float32)[None, :, :, None]
    coarse = np.kron(np.indices((7, 7)).sum(axis=0) % 2, np.ones((4, 4))).astype(np.float32)[None, :, :, None]
    lowres = VARIANTS.get("lowres").apply
    rng = np.random.default_rng(0)
    # a 1-pixel checkerboard averages to flat grey at 7x7; 4-pixel blocks survive the round trip
    assert np.ptp(lowres(checker, rng, LowResParams(factor=4))) < 0.05
    assert np.ptp(lowres(coarse, rng, LowResParams(factor=4))) > 0.8
    assert str(parse_spec("D5", builtin_names())) == "fashion-mnist:lowres?factor=4"  # the paper's alias, no data needed


def test_d5_loads_the_installed_fashion_mnist_at_low_resolution(fashion_mnist_required):
    data = load_dataset("D5", limit=20)
    assert str(data.spec) == "fashion-mnist:lowres?factor=4"
    assert data.test.x.shape == (20, 28, 28, 1) and data.labels[0] == "T-shirt/top"
