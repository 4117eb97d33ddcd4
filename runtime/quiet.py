"""Keep TensorFlow's own chatter off the terminal, so the `hgen*` commands print hgen's progress only.

Every CLI's `main` calls `quiet_unless_verbose(argv)` first, before anything imports TensorFlow; `--verbose`
skips all of it and leaves the environment, loggers and warnings filters as they are. This module never imports
TensorFlow (nor Keras, absl or LiteRT): it sets environment variables, logger levels and warnings filters, and
installs an import hook that acts when those packages are first imported. What each measure is for:

* `TF_CPP_MIN_LOG_LEVEL=3` (unless already set): TensorFlow's C++ logging through TSL (`cpu_feature_guard` "This
  TensorFlow binary is optimized to use ...", `cudart_stub` "Could not find cuda drivers", runtime warnings).
* a stderr filter around the first `import tensorflow`: C++ code that logs through Abseil before
  `absl::InitializeLog()` has been called goes to stderr whatever its severity, so TF_CPP_MIN_LOG_LEVEL does not
  reach it (tensorflow#100442, abseil-cpp#1718). In TF 2.21 on CPU that is `port.cc` "oneDNN custom operations are
  on ..." (twice: two TensorFlow libraries with their own Abseil), each after "WARNING: All log messages before
  absl::InitializeLog() is called are written to STDERR"; CUDA builds add "Unable to register cuDNN factory" etc.
  Only `TF_ENABLE_ONEDNN_OPTS=0` would prevent the oneDNN line, but it turns oneDNN off (other numerics, other
  speed), so the lines are dropped instead: while TensorFlow imports, fd 2 goes to a temporary file; afterwards
  every line that is not an Abseil/TSL log line below TF_CPP_MIN_LOG_LEVEL is written to stderr again.
* a stderr filter around a TFLite interpreter's creation and `allocate_tensors` (LiteRT, tflite-runtime, TensorFlow's) until TFLite's own
  "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." has gone by: TFLite's minimal logger prints it
  with fprintf and no variable turns it off. Only INFO/WARNING lines in TFLite's format (below
  TF_CPP_MIN_LOG_LEVEL) are dropped there.
* the `tensorflow` logger at ERROR (it is `tf.get_logger()`; TensorFlow only changes its level in interactive
  shells): "N out of the last M calls to <function ...> triggered tf.function retracing", deprecation notices.
* the `keras` logger and, once absl-py is imported, its `absl` logger at ERROR (absl-py has to create that logger
  itself, so the level is set by the import hook rather than beforehand).
* `warnings` filters ignoring warnings raised from tensorflow, keras, tf_keras and absl modules.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

VERBOSE_FLAG = "--verbose"
VERBOSE_HELP = "show TensorFlow's own log lines and warnings (hidden by default)"
TF_LOG_LEVEL = "3"
PYTHON_LOGGERS = ("tensorflow", "keras")
WARNING_MODULES = r"(tensorflow|keras|tf_keras|absl)(\.|$)"

# Abseil ("I0000 00:00:1796391231.214927    4768 port.cc:153] ...") and TSL ("2025-09-17 14:44:05.157831: I
# external/.../cudart_stub.cc:32] ...") log lines; group 1 is the severity letter.
_ABSL_LINE = re.compile(rb"^([IWE])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")  # before InitializeLog: "00:00:<epoch>"
_TSL_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWE]) [^ \]]+:\d+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_TSL_CONTINUATION = b"To enable the following instructions:"  # second line of cpu_feature_guard's message
_TFLITE_LINE = re.compile(rb"^(INFO|WARNING): ")
_XNNPACK_LINE = b"Created TensorFlow Lite XNNPACK delegate"
_QUANTIZER_LINE = re.compile(rb"^fully_quantize: \d+, inference_type: \d+")  # TFLite's int8 quantizer, printf
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"INFO": 0, b"WARNING": 1}

_lock = threading.RLock()  # one stderr redirection at a time (they restore fd 2 in LIFO order)
PUMP_JOIN_S = 10.0  # how long leaving a filtered block waits for its last lines to be passed on
_installed = False


def verbose_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether `--verbose` (or an abbreviation argparse would accept) is among the options, before `--`."""
    for token in sys.argv[1:] if argv is None else argv:
        if token == "--":
            return False
        if len(token) >= 3 and VERBOSE_FLAG.startswith(token):
            return True
    return False


def add_verbose_argument(parser: argparse.ArgumentParser, _default: object = False) -> None:
    """`--verbose` on a finished parser and on all its sub-commands' (`hgen --verbose demo` = `hgen demo --verbose`)."""
    parser.add_argument(VERBOSE_FLAG, action="store_true", default=_default, help=VERBOSE_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                add_verbose_argument(sub, argparse.SUPPRESS)  # SUPPRESS: keep the main parser's value


def quiet_unless_verbose(argv: Sequence[str] | None = None) -> bool:
    """Call first in a CLI's main: silences TensorFlow unless `--verbose` is in argv. Returns whether verbose."""
    verbose = verbose_requested(argv)
    if not verbose:
        silence_tensorflow()
    return verbose


def silence_tensorflow() -> None:
    """Everything listed in the module docstring; idempotent. For a package imported already, only the step after
    its import still applies (logger level, interpreter wrapper)."""
    global _installed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    for name in PYTHON_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=WARNING_MODULES)
    with _lock:
        if _installed:
            return
        _installed = True
    hooks: dict[str, Callable[[ModuleType, Callable[[], None]], None]] = {
        "tensorflow": _import_with_filtered_stderr,
        "absl.logging": _then(_quiet_absl),
        "ai_edge_litert.interpreter": _then(_filter_first_allocations),
        "tflite_runtime.interpreter": _then(_filter_first_allocations),
        "tensorflow.lite.python.interpreter": _then(_filter_first_allocations),  # TensorFlow's own (tf2onnx uses it)
    }
    for name, hook in list(hooks.items()):
        module = sys.modules.get(name)
        if module is not None:  # already imported: too late for the import, not for the rest
            hook(module, lambda: None)
            del hooks[name]
    sys.meta_path.insert(0, _ImportHook(hooks))


@contextlib.contextmanager
def quiet_conversion() -> Iterator[None]:
    """Around a TFLite conversion: its int8 quantizer prints "fully_quantize: 0, inference_type: 6, ..." to stderr
    from C++ on every call. Only that line is dropped, and only while TensorFlow is silenced (not `--verbose`).
    A conversion can take a while inside a serving hub (a retrain), so every other line goes on to stderr as it is
    written rather than when the conversion ends."""
    if not _installed:
        yield
        return
    with _forwarded_stderr(lambda line: _QUANTIZER_LINE.match(line) is not None):
        yield


# --- stderr filtering ---------------------------------------------------------------------------------------


def _min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _tensorflow_noise(line: bytes, level: int) -> bool:
    if line.startswith(_ABSL_PREAMBLE):
        return level >= 1
    if line.startswith(_TSL_CONTINUATION):
        return level >= 1
    match = _ABSL_LINE.match(line) or _TSL_LINE.match(line)
    return match is not None and _SEVERITY[match.group(1)] < level


def _tflite_noise(line: bytes, level: int) -> bool:
    match = _TFLITE_LINE.match(line)
    return match is not None and _SEVERITY[match.group(1)] < level


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _flush_python_stderr() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def _filtered_stderr(noise: Callable[[bytes, int], bool]) -> Iterator[list[bytes]]:
    """fd 2 goes to a temporary file for the block; then its lines that are not `noise` go to stderr again.

    The yielded list receives every captured line (after the block). Only `noise` is dropped, unless the process
    dies inside the block; `--verbose` runs without any of this."""
    captured: list[bytes] = []
    with _lock:
        _flush_python_stderr()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to filter
            yield captured
            return
        try:
            with tempfile.TemporaryFile() as capture:
                os.dup2(capture.fileno(), 2)
                try:
                    yield captured
                finally:
                    _flush_python_stderr()
                    os.dup2(saved, 2)
                    capture.seek(0)
                    level = _min_log_level()
                    captured.extend(capture.read().splitlines(keepends=True))
                    with contextlib.suppress(OSError):
                        _write_all(2, b"".join(line for line in captured if not noise(line, level)))
        finally:
            os.close(saved)


@contextlib.contextmanager
def _forwarded_stderr(noise: Callable[[bytes], bool]) -> Iterator[None]:
    """fd 2 goes into a pipe for the block; a thread passes each line that is not `noise` on to the real stderr at
    once, so other threads' logging is neither held back nor lost if the process dies inside the block."""
    with _lock:
        _flush_python_stderr()
        try:
            saved = os.dup(2)
            read_end, write_end = os.pipe()
        except OSError:  # no stderr at all: nothing to filter
            yield
            return
        pump = threading.Thread(target=_pump, args=(read_end, saved, noise), name="hgen-stderr", daemon=True)
        pump.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            yield
        finally:
            _flush_python_stderr()
            os.dup2(saved, 2)  # the pipe's last write end closes: the pump reads to its end and stops
            pump.join(timeout=PUMP_JOIN_S)  # a child that still holds the pipe keeps the pump (and `saved`) until it exits


def _pump(read_end: int, out: int, noise: Callable[[bytes], bool]) -> None:
    """Owns `out` (a duplicate of the real stderr) and closes it when the pipe ends, however late that is."""
    try:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if not noise(line):
                    with contextlib.suppress(OSError):
                        _write_all(out, line)
    finally:
        os.close(out)


def _import_with_filtered_stderr(module: ModuleType, execute: Callable[[], None]) -> None:
    with _filtered_stderr(_tensorflow_noise):
        execute()


# --- after-import steps -------------------------------------------------------------------------------------


def _then(step: Callable[[ModuleType], None]) -> Callable[[ModuleType, Callable[[], None]], None]:
    def hook(module: ModuleType, execute: Callable[[], None]) -> None:
        execute()
        step(module)

    return hook


def _quiet_absl(absl_logging: ModuleType) -> None:
    absl_logging.set_verbosity(absl_logging.ERROR)


def _filter_first_allocations(module: ModuleType) -> None:
    """Wrap `Interpreter.__init__` and `allocate_tensors` until TFLite's once-per-process XNNPACK INFO line has gone
    by: depending on how the model is given and the LiteRT version, the delegate is made in either."""
    interpreter = getattr(module, "Interpreter", None)
    if interpreter is None:
        return
    seen = threading.Event()
    for name in ("__init__", "allocate_tensors"):
        original = getattr(interpreter, name, None)
        if original not in (None, object.__init__) and not getattr(original, "_hgen_quiet", False):
            setattr(interpreter, name, _until_xnnpack_seen(original, seen))


def _until_xnnpack_seen(original: Callable[..., object], seen: threading.Event) -> Callable[..., object]:
    @functools.wraps(original)
    def quiet(*args, **kwargs):
        if seen.is_set():
            return original(*args, **kwargs)
        with _filtered_stderr(_tflite_noise) as captured:
            result = original(*args, **kwargs)
        if any(_XNNPACK_LINE in line for line in captured):
            seen.set()
        return result

    quiet._hgen_quiet = True  # type: ignore[attr-defined]
    return quiet


# --- the import hook ----------------------------------------------------------------------------------------


class _ImportHook(importlib.abc.MetaPathFinder):
    """Runs `hooks[name](module, execute)` around the first execution of each named module (then forgets it)."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType, Callable[[], None]], None]]) -> None:
        self._hooks = dict(hooks)

    def find_spec(self, fullname, path=None, target=None):
        hook = self._hooks.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        self._hooks.pop(fullname, None)
        spec.loader = _HookedLoader(spec.loader, hook)
        return spec


class _HookedLoader:
    """The module's own loader, with `exec_module` run through the hook; everything else is delegated."""

    def __init__(self, loader: importlib.abc.Loader, hook: Callable[[ModuleType, Callable[[], None]], None]) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # the package sees its own loader, as without the hook
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._hook(module, lambda: self._loader.exec_module(module))

    def __getattr__(self, name: str):
        return getattr(self._loader, name)
