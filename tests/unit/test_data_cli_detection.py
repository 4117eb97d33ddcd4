"""`hgen data` takes the built-in detection sets every CLI takes (`digits-det`, `mnist-det`) and shows their boxes;
spec errors list them and tell a detection set from a classification one; a missing data set names the download
flag and keyword."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data import make_idx_dataset
from test_data_formats import _cache  # noqa: F401 (autouse: a cache folder per test)
from test_data_manifests import make_yolo

from hgen.compiler.cli.main import main
from hgen.compiler.data import load_dataset
from hgen.compiler.data.detection import load_detection_dataset
from hgen.compiler.errors import DatasetNotFoundError, DatasetSpecError, UnknownNameError


def _boxes_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("boxes "))


def test_hgen_data_describes_a_builtin_detection_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "digits-det:noise", "--limit", "30"]) == 0
    out = capsys.readouterr().out
    assert "dataset   digits-det:noise?variance=0.2" in out and "(64, 64, 1)" in out
    assert "splits    train 30, validation 30, test 30" in out and "classes   0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in out
    data = load_detection_dataset("digits-det:noise", limit=30)
    counts = [sum(len(b) for b in part.boxes) for part in (data.train, data.val, data.test)]
    per_image = [len(b) for part in (data.train, data.val, data.test) for b in part.boxes]
    assert _boxes_line(out) == (f"boxes     train {counts[0]}, validation {counts[1]}, test {counts[2]}; "
                                f"{min(per_image)}..{max(per_image)} per image "
                                f"(mean {sum(per_image) / len(per_image):.2f})")


def test_hgen_data_reads_mnist_det_from_the_root_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HGEN_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    make_idx_dataset(tmp_path / "own" / "mnist", n=100)
    assert main(["data", "mnist-det:noise", "--root", str(tmp_path / "own"), "--limit", "10"]) == 0
    out = capsys.readouterr().out
    assert "dataset   mnist-det:noise?variance=0.2" in out and f"origin    {tmp_path / 'own' / 'mnist'}" in out
    assert "per image" in _boxes_line(out)


def test_hgen_data_shows_the_boxes_of_a_users_yolo_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", str(make_yolo(tmp_path / "yolo")), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert _boxes_line(out) == "boxes     train 6, validation 2, test 2; 1..1 per image (mean 1.00)"
    assert "classes   cat, dog, owl" in out


def test_unknown_dataset_lists_the_detection_sets_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "nope"]) == 2
    assert "or a detection set: digits-det, mnist-det" in capsys.readouterr().err
    for load in (load_dataset, load_detection_dataset):
        with pytest.raises(UnknownNameError, match=r"valid choices: mnist, .*auto .*detection set: digits-det"):
            load("nope")


def test_each_loader_names_the_other_for_a_set_of_the_other_kind() -> None:
    with pytest.raises(DatasetSpecError, match="'digits-det' is a synthetic detection data set.*load_detection_dat"):
        load_dataset("digits-det:noise")
    with pytest.raises(DatasetSpecError, match=r"'mnist' is a classification data set \(its detection set is "
                                               r"'mnist-det'\): load it with hgen.compiler.data.load_dataset"):
        load_detection_dataset("D2")


def test_not_found_names_the_download_flag_and_keyword(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HGEN_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DatasetNotFoundError, match=r"`hgen data mnist --download` \(in Python `allow_download=True`\)"):
        load_dataset("mnist")
    assert main(["data", "mnist-det"]) == 3
    assert "hgen data mnist --download" in capsys.readouterr().err


def test_inspect_counts_and_draws_the_boxes_of_a_builtin_detection_set(tmp_path: Path) -> None:
    """`hgen data inspect digits-det`: boxes per class, and a sheet per class whose tiles show only that class's
    boxes (drawn in red on the grey canvases)."""
    import cv2

    from hgen.compiler.data.inspect import inspect_dataset

    found = inspect_dataset("digits-det", out_dir=tmp_path, limit=40)
    assert found.task == "detect" and found.format == "builtin" and len(found.sheets) == 10
    data = load_detection_dataset("digits-det", limit=40)
    three = sum(int((b[:, 4] == 3).sum()) for b in data.train.boxes)
    assert found.counts["train"]["3"] == three > 0
    sheet = cv2.imread(str(next(p for p in found.sheets if Path(p).name.endswith("_3.png"))))
    red = (sheet[..., 2] > 150) & (sheet[..., 1] < 80) & (sheet[..., 0] < 80)
    assert red.sum() > 0  # the boxes are drawn
