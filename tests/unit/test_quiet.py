"""The CLIs print hgen's own lines only: TensorFlow's C++/absl/Python chatter is hidden unless --verbose."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
from types import SimpleNamespace

import pytest

from hgen.edge_agent.testing import relu_tflite
from hgen.runtime import quiet

# The real `hgen lower` on a missing .keras file: imports Keras (so TensorFlow), then fails with one line of its
# own. Afterwards the same process logs through TensorFlow's, Keras's and absl's loggers and raises a Keras warning.
SCRIPT = textwrap.dedent("""
    import logging, sys, warnings
    from hgen.compiler.cli.main import main
    code = main(sys.argv[1:])
    import tensorflow as tf
    from absl import logging as absl_logging
    tf.get_logger().warning("5 out of the last 5 calls to <function f> triggered tf.function retracing.")
    logging.getLogger("keras").warning("keras logger warning")
    absl_logging.warning("absl logger warning")
    warnings.warn_explicit("keras user warning", UserWarning, "keras/src/layers/layer.py", 1,
                           module="keras.src.layers.layer")
    sys.exit(code)
""")
TENSORFLOW_LINES = ("oneDNN custom operations are on", "absl::InitializeLog()", "triggered tf.function retracing",
                    "keras logger warning", "absl logger warning", "keras user warning")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="needs TensorFlow: pip install 'hgen[compiler]'")
def test_cli_hides_tensorflow_unless_verbose(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"  # TensorFlow then logs "oneDNN custom operations are on" on any CPU
    argv = ["lower", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "bundle"), "--key", str(tmp_path / "k")]
    runs = {mode: subprocess.Popen([sys.executable, "-c", SCRIPT, *argv, *flags], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for mode, flags in (("quiet", []), ("verbose", ["--verbose"]))}  # side by side: ~2 TF imports' time
    out = {mode: (run.communicate(timeout=120)[1], run.returncode) for mode, run in runs.items()}

    err, code = out["quiet"]
    assert code == 2, err[-2000:]  # a missing model file is bad input
    assert err.splitlines() == [f"hgen lower: error: model file {tmp_path / 'missing.keras'} does not exist"], err
    err, code = out["verbose"]
    assert code == 2, err[-2000:]
    assert "hgen lower: error: model file" in err
    for line in TENSORFLOW_LINES:
        assert line in err, f"--verbose should keep {line!r}:\n{err[-3000:]}"


def test_verbose_is_found_before_parsing():
    assert quiet.verbose_requested(["demo", "--verbose"])
    assert quiet.verbose_requested(["--verbose", "demo"])
    assert quiet.verbose_requested(["demo", "--verb"])  # argparse accepts unambiguous abbreviations
    assert not quiet.verbose_requested(["demo", "--out", "build/demo"])
    assert not quiet.verbose_requested(["lower", "m.keras", "--version", "1.0.0"])
    assert not quiet.verbose_requested(["data", "--", "--verbose"])


def test_every_cli_accepts_verbose_before_and_after_its_command():
    from hgen.compiler.cli.main import build_parser as hgen_parser
    from hgen.edge_agent.cli import _parser as agent_parser
    from hgen.hub.cli import build_parser as hub_parser

    for parser, argv in ((hgen_parser(), ["data", "digits"]), (hgen_parser(), ["keys", "show", "k.pub"]),
                         (hub_parser(), ["migrate", "--config", "c.yaml"]),
                         (agent_parser(), ["check", "--config", "a.yaml"])):
        assert parser.parse_args(argv).verbose is False
        assert parser.parse_args(["--verbose", *argv]).verbose is True
        assert parser.parse_args([*argv, "--verbose"]).verbose is True


def test_tensorflow_log_lines_are_dropped_below_the_level():
    noise = quiet._tensorflow_noise
    preamble = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    onednn = b"I0000 00:00:1796391231.214927    4768 port.cc:153] oneDNN custom operations are on.\n"
    cuda = b"2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda\n"
    cudnn = b"E0000 00:00:1758131437.297298 3722519 cuda_dnn.cc:8579] Unable to register cuDNN factory\n"
    assert all(noise(line, 3) for line in (preamble, onednn, cuda, cudnn))
    assert not noise(cudnn, 2) and noise(onednn, 1) and not noise(onednn, 0)
    assert not noise(b"F0000 00:00:1.5 1 x.cc:1] fatal\n", 3)
    assert not noise(b"dataset digits: 200 train\n", 3) and not noise(b"Traceback (most recent call last):\n", 3)


def test_filtered_stderr_keeps_everything_else(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet._filtered_stderr(quiet._tensorflow_noise) as captured:
        os.write(2, b"I0000 00:00:1796391231.2 4768 port.cc:153] oneDNN custom operations are on.\nkept\n")
        print("from python", file=sys.stderr)
    assert sorted(capfd.readouterr().err.splitlines()) == ["from python", "kept"]  # order: pytest owns sys.stderr
    assert captured[1] == b"kept\n"


# A process that loads a real LiteRT interpreter, with (`quiet`) or without (`plain`) hgen's silencing before the
# import, and writes its own stderr lines around the first `allocate_tensors`, where TFLite prints its XNNPACK line.
LITERT_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    if sys.argv[2] == "quiet":
        from hgen.runtime import quiet
        quiet.silence_tensorflow()
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=sys.argv[1])
    os.write(2, b"before allocation\\n")
    interpreter.allocate_tensors()
    os.write(2, b"after allocation\\n")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.array([[-1, 2, -3, 4]], np.float32))
    interpreter.invoke()
    print(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).tolist())
""")


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                    reason="needs LiteRT: pip install 'hgen[agent]'")
def test_real_litert_xnnpack_line_is_dropped_only_when_silenced(tmp_path):
    model = tmp_path / "relu.tflite"
    model.write_bytes(relu_tflite())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"  # in both runs: the variable alone does not reach TFLite's INFO line
    runs = {mode: subprocess.Popen([sys.executable, "-c", LITERT_SCRIPT, str(model), mode], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for mode in ("quiet", "plain")}
    out = {mode: run.communicate(timeout=60) + (run.returncode,) for mode, run in runs.items()}

    for mode, (stdout, err, code) in out.items():
        assert code == 0, f"{mode}: {err[-2000:]}"
        assert stdout == "[[0.0, 2.0, 0.0, 4.0]]\n", f"{mode}: the interpreter still computes"
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in out["plain"][1].splitlines(), out["plain"]
    assert out["quiet"][1].splitlines() == ["before allocation", "after allocation"], out["quiet"][1]


def test_tflite_filter_keeps_other_lines_then_calls_go_straight_through(capfd, monkeypatch):
    """What the real interpreter cannot be made to do: print a line to keep inside `allocate_tensors`, and print
    its XNNPACK line again after the filter has stepped aside."""
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")

    class Interpreter:
        def allocate_tensors(self):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: kept\n")
            return 7

    quiet._filter_first_allocations(SimpleNamespace(Interpreter=Interpreter))
    assert Interpreter().allocate_tensors() == 7
    assert capfd.readouterr().err == "ERROR: kept\n"
    Interpreter().allocate_tensors()  # the line is printed once per process: no more filtering
    assert "XNNPACK" in capfd.readouterr().err


def test_import_hook_filters_the_import_and_keeps_the_loader(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    (tmp_path / "hgen_quiet_probe.py").write_text(
        "import os\nos.write(2, b'W0000 00:00:17.5 1 probe.cc:1] noise\\nkept\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = quiet._ImportHook({"hgen_quiet_probe": quiet._import_with_filtered_stderr})
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    try:
        import hgen_quiet_probe
    finally:
        sys.modules.pop("hgen_quiet_probe", None)
    assert capfd.readouterr().err == "kept\n"
    assert type(hgen_quiet_probe.__loader__).__name__ == "SourceFileLoader"
    assert hgen_quiet_probe.__spec__.loader is hgen_quiet_probe.__loader__


MODEL_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.save(sys.argv[1])
    np.save(sys.argv[2], np.random.default_rng(0).random((100, 8, 8, 1), dtype=np.float32))
""")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="needs TensorFlow: pip install 'hgen[compiler]'")
def test_lowering_a_real_model_to_int8_prints_only_hgens_lines(tmp_path):
    """TFLite's int8 quantizer ("fully_quantize: ...") and TensorFlow's own interpreter (XNNPACK, met through the
    phone's web models) print from C++; `hgen lower` shows neither unless --verbose."""
    from hgen.runtime import signing

    model, data, key = tmp_path / "net.keras", tmp_path / "rep.npy", tmp_path / "signing.key"
    subprocess.run([sys.executable, "-c", MODEL_SCRIPT, str(model), str(data)], check=True, capture_output=True)
    key.write_bytes(signing.private_key_pem(signing.generate_private_key()))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    runs = {mode: subprocess.Popen([sys.executable, "-m", "hgen.compiler.cli.main", "lower", str(model), "--out",
                                    str(tmp_path / mode), "--key", str(key), "--quantize", "int8",
                                    "--representative", str(data), *flags],
                                   env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for mode, flags in (("quiet", []), ("verbose", ["--verbose"]))}
    out = {mode: run.communicate(timeout=300) + (run.returncode,) for mode, run in runs.items()}
    stdout, err, code = out["quiet"]
    assert code == 0 and err == "", err[-3000:]
    assert stdout.splitlines()[-1] == f"bundle: {tmp_path / 'quiet'}" and "fully_quantize" not in stdout
    verbose = out["verbose"][0] + out["verbose"][1]
    assert out["verbose"][2] == 0 and "fully_quantize" in verbose, "the test no longer meets the quantizer's line"


def test_conversion_filter_passes_other_lines_on_while_it_runs(capfd, monkeypatch):
    """Inside a serving hub a conversion is one thread among many: their lines reach stderr during it, only the
    quantizer's line is dropped, and nothing is left behind in a temporary file."""
    monkeypatch.setattr(quiet, "_installed", True)
    passed_on = []
    with quiet.quiet_conversion():
        os.write(2, b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8\nother thread's line\n")
        # the pump forwards while the block still runs: poll the real stderr for the line, with a deadline
        for _ in range(200):
            passed_on.append(capfd.readouterr().err)
            if "other thread's line" in "".join(passed_on):
                break
            threading.Event().wait(0.05)
        forwarded_inside = "".join(passed_on)
    passed_on.append(capfd.readouterr().err)
    assert forwarded_inside == "other thread's line\n", "held back until the conversion ended"
    assert "".join(passed_on) == "other thread's line\n"
    assert os.fstat(2)  # stderr is restored


def test_a_child_holding_the_pipe_after_the_block_is_still_forwarded_and_nothing_leaks(capfd, monkeypatch):
    """A process started inside the block inherits the pipe as its stderr: its late lines still reach the real
    stderr, and the duplicate of stderr the pump holds is closed when the child is done with the pipe."""
    import subprocess
    import sys

    monkeypatch.setattr(quiet, "_installed", True)
    monkeypatch.setattr(quiet, "PUMP_JOIN_S", 0.01)  # do not wait for the child when the block ends
    before = len(os.listdir("/proc/self/fd"))
    with quiet.quiet_conversion():
        child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sys.stderr.write('late\\n')"],
                                 stdin=subprocess.PIPE)
    child.communicate(b"")  # now it writes its line into the pipe and exits, closing the last write end
    for pump in [t for t in threading.enumerate() if t.name == "hgen-stderr"]:  # it may have ended already
        pump.join(timeout=30)
        assert not pump.is_alive()
    assert capfd.readouterr().err == "late\n"
    assert len(os.listdir("/proc/self/fd")) == before
