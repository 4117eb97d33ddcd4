"""The CLI maps typed errors to exit codes and prints one line, never a traceback."""

import pytest

from hgen.compiler.cli.main import main


@pytest.mark.parametrize("argv, code, message", [
    (["data", "nope"], 2, "valid choices: mnist, fashion-mnist, digits, auto (or an alias D1, D2, D3, D4, D5), "
                          "or a detection set: digits-det, mnist-det"),
    (["data", "D5?factor=99"], 2, "factor"),
    (["evaluate", "--tau", "1.5", "--dataset", "digits"], 2, "tau must be in [0, 1]"),
    (["evaluate", "-m", "0", "--dataset", "digits"], 2, "m: Input should be greater than or equal to 1"),
    (["evaluate", "--model", "resnet9000", "--dataset", "digits", "--limit", "20", "--epochs", "1"], 2,
     "unknown model 'resnet9000'; valid choices: lenet5"),
])
def test_bad_input_exits_non_zero_without_traceback(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_data_exits_3_and_says_how_to_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HGEN_DATA", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert main(["data", "mnist"]) == 3
    assert "HGEN_DATA" in capsys.readouterr().err


def test_unknown_command_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "evaluate" in capsys.readouterr().err


def test_unknown_bundle_engines_are_refused_before_any_training(tmp_path, capsys):
    """`--engines litert,onnx` used to train and search first, and fail only when the bundle was written."""
    out = tmp_path / "out"
    assert main(["compile", "--dataset", "digits", "--engines", "litert,onnx", "--out", str(out)]) == 2
    assert "distinct names from ('litert', 'tvm'), got ('litert', 'onnx')" in capsys.readouterr().err
    assert not out.exists()


def test_a_full_disk_is_one_line_exit_1_and_other_os_errors_keep_their_traceback(monkeypatch, capsys):
    """A disk filling up mid-compile ended in a traceback. (Simulated: the verb raises the OSError a write would.)"""
    import errno
    from dataclasses import replace

    from hgen.compiler.cli import VERBS

    def full(args) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/out/model.tflite")

    verb = VERBS.get("data")
    monkeypatch.setitem(VERBS._entries(), "data", replace(verb, run=full))
    assert main(["data", "digits"]) == 1
    err = capsys.readouterr().err
    assert "error: No space left on device writing /out/model.tflite: free space on that disk" in err
    assert "Traceback" not in err

    def bug(args) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/nowhere")

    monkeypatch.setitem(VERBS._entries(), "data", replace(verb, run=bug))
    with pytest.raises(FileNotFoundError):  # not the machine's storage: a bug whose traceback must show
        main(["data", "digits"])
