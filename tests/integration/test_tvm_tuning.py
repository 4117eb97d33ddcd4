"""MetaSchedule tuning of LeNet-5 on the host: a tiny budget, and the tuned library must compute what the
untuned one does (schedules reorder loops, not arithmetic beyond float rounding).

Skipped, with the reason, when the tuning dependencies are missing or broken (e.g. the apache-tvm-ffi whose
JSON serialiser segfaults): `TuningDependencyError` is checked before anything can crash.

No wall-clock bound here: how long tuning takes is measured by tools/bench/tvm_tuning.py (repeats, medians).

The tuned compile runs in a fresh (spawned) process that never imports TensorFlow: the first tuning in a process
imports TVM's tensor intrinsics, whose TVMScript parser scans `sys.modules` ~30,000 times, which costs 30-40 s more
with TensorFlow's thousands of modules loaded (tools/bench/results/tvm_tuning_notes.md); in the whole suite that was
~120 s for this one test. The code under test, `lower_tvm(..., tuning=...)`, is the same.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering import TFLiteModel, TVMLibrary, lower_tflite, lower_tvm
from hgen.compiler.lowering.tuning import TuneConfig, TuningDependencyError
from hgen.compiler.models import build_model
from hgen.runtime.engines import open_engine
from hgen.runtime.engines.base import Engine

# One round of 4 candidates on the heaviest task: enough to build, time and apply a tuned schedule.
BUDGET = TuneConfig(trials=4, trials_per_task=4, trials_per_iter=4, max_tasks=1)


@pytest.fixture(scope="module")
def lenet_tflite() -> TFLiteModel:
    import keras

    keras.utils.set_random_seed(0)
    return lower_tflite(build_model("lenet5", (28, 28, 1), 10), quantize="float")


def _engine(library: TVMLibrary, tflite: TFLiteModel) -> Engine:
    config = {"input_shape": list(tflite.input_shape), "output_shape": list(tflite.output_shape)}
    return open_engine("tvm", library.path, config)


def test_tuned_lenet_matches_untuned(lenet_tflite, tmp_path):
    config = TuneConfig(**{**vars(BUDGET), "work_dir": tmp_path / "tuning"})
    try:
        tuned = tuned_without_tensorflow(lenet_tflite.content, tmp_path / "tuned", config)
    except TuningDependencyError as exc:
        pytest.skip(f"MetaSchedule unavailable here: {exc}")
    untuned = lower_tvm(lenet_tflite.content, "x86_64", tmp_path / "untuned")

    assert tuned.format == "shared-library" and tuned.machine == "x86_64"
    assert measured_trials(tmp_path / "tuning") > 0, "no candidate was built and measured"
    images = np.random.default_rng(0).uniform(0, 1, (8, 28, 28, 1)).astype(np.float32)
    expected = _engine(untuned, lenet_tflite).run(images)
    np.testing.assert_allclose(_engine(tuned, lenet_tflite).run(images), expected, rtol=0, atol=1e-4)


def tuned_without_tensorflow(content: bytes, out_stem: Path, config: TuneConfig) -> TVMLibrary:
    """`lower_tvm` with tuning in a spawned child, which imports only the lowering package (see the module doc);
    its errors (`TuningDependencyError` too) come back pickled."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(lower_tvm, content, "x86_64", out_stem, tuning=config).result()


def measured_trials(work_dir: Path) -> int:
    """Trials MetaSchedule timed, from its per-task logs ("Trial #n: GFLOPs: ..." lines)."""
    logs = [path for path in (work_dir / "logs").glob("*task_*.log") if "task_scheduler" not in path.name]
    return sum(path.read_text().count("Best GFLOPs") for path in logs)


def test_cross_target_cannot_be_tuned_here(lenet_tflite, tmp_path):
    with pytest.raises(CompilerError, match="cannot be tuned here"):
        lower_tvm(lenet_tflite.content, "rpi4", tmp_path / "rpi4", tuning=BUDGET)


BAD_CONFIGS = [
    {"trials": 0},
    {"trials_per_task": 0},
    {"max_tasks": 0},
    {"cost_model": "mlp"},
    {"strategy": "grid"},
    {"runner_timeout_s": 0},
]


@pytest.mark.parametrize("bad", BAD_CONFIGS)
def test_bad_config_is_refused(bad):
    with pytest.raises(InvalidArgumentError):
        TuneConfig(**bad)
