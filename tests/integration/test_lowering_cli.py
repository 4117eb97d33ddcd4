"""`hgen keys`, `hgen lower` and `hgen verify` end to end, through the CLI's main (exit codes included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.cli.main import main
from hgen.compiler.models import build_model
from hgen.runtime.bundle import load_bundle


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    model = build_model("lenet5", (28, 28, 1), 3)
    model.save(root / "user.keras")
    np.save(root / "rep.npy", np.random.default_rng(0).random((120, 28, 28, 1), dtype=np.float32))
    assert main(["keys", "generate", "--out", str(root / "keys")]) == 0
    return {"root": root, "model": root / "user.keras", "rep": root / "rep.npy", "key": root / "keys" / "signing.key",
            "pub": root / "keys" / "signing.pub"}


def test_lower_pack_verify_and_load(files, capsys) -> None:
    out = files["root"] / "bundle"
    code = main(["lower", str(files["model"]), "--out", str(out), "--key", str(files["key"]), "--labels", "a,b,c",
                 "--quantize", "int8", "--representative", str(files["rep"]), "--pack", "--version", "2.0.1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "archive:" in printed and "litert: model.int8.tflite" in printed
    assert main(["verify", str(out), "--key", str(files["pub"]), "--target", "x86_64"]) == 0
    assert main(["verify", str(out.with_suffix(".hgb")), "--key", str(files["pub"])]) == 0
    assert "verified: user 2.0.1 for x86_64" in capsys.readouterr().out
    assert main(["verify", str(out), "--key", str(files["pub"]), "--target", "rpi4"]) == 1
    with load_bundle(out.with_suffix(".hgb"), trusted_public_key=files["pub"]) as loaded:
        assert loaded.manifest.labels == ("a", "b", "c")
        assert loaded.engine.run(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 3)


def test_lower_int8_calibrates_on_a_data_sets_training_split(files, capsys) -> None:
    out = files["root"] / "from-dataset"
    code = main(["lower", str(files["model"]), "--out", str(out), "--key", str(files["key"]), "--engines", "litert",
                 "--quantize", "int8", "--representative-dataset", "digits"])
    assert code == 0, capsys.readouterr().err
    with load_bundle(out, trusted_public_key=files["pub"]) as loaded:
        assert loaded.engine.run(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 3)
    both = ["--representative", str(files["rep"]), "--representative-dataset", "digits"]
    with pytest.raises(SystemExit) as refused:  # argparse refuses before any work
        main(["lower", str(files["model"]), "--out", str(files["root"] / "y"), "--key", str(files["key"]),
              "--quantize", "int8", *both])
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_lower_refuses_bad_arguments(files, capsys) -> None:
    assert main(["lower", str(files["model"]), "--out", str(files["root"] / "nokey")]) == 2
    assert main(["lower", str(files["model"]), "--out", str(files["root"] / "x"), "--key", str(files["key"]),
                 "--target", "esp32"]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_lower_takes_labels_from_a_file_so_a_label_may_hold_a_comma(files, capsys) -> None:
    """`--labels` was comma-separated only: a class such as "x,y" could not be named, and an "é" typed decomposed
    (NFD, as macOS file names give it) stayed another label than the data formats' NFC one."""
    names = files["root"] / "labels.txt"
    names.write_text("x,y\nCafe\u0301\n猫\n", encoding="utf-8")
    out = files["root"] / "labelled"
    code = main(["lower", str(files["model"]), "--out", str(out), "--key", str(files["key"]), "--engines", "litert",
                 "--labels", f"@{names}"])
    assert code == 0, capsys.readouterr().err
    with load_bundle(out, trusted_public_key=files["pub"]) as loaded:
        assert loaded.manifest.labels == ("x,y", "Café", "猫")
    assert main(["lower", str(files["model"]), "--out", str(files["root"] / "z"), "--key", str(files["key"]),
                 "--labels", f"@{files['root'] / 'absent.txt'}"]) == 2
    assert "cannot read" in capsys.readouterr().err
